"""The recording calls the working code makes, one per spot being measured.

Each call updates the Prometheus figure (figures.py) and, in processes that write the service's
own figures, the in-memory deltas of the next flush, through the sink an app registered
(sink.py; selfmetrics/selfstore.py). With SELF_METRICS_RECORDING
off every call returns at once. The cost of a call is a few microseconds: a dictionary lookup
and a write to a memory-mapped file, under a lock held for nothing else.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from typing import Any, TypeVar

from django.conf import settings
from django.db import DatabaseError

from . import figures, sink

F = TypeVar("F", bound=Callable[..., Any])

# Set only around the own figures' writes; otherwise a write is "async" in a Celery worker (a
# queued batch), "statsd" in the StatsD listener and "sync" anywhere else (in the request).
_ingest_path: ContextVar[str | None] = ContextVar("ingest_path", default=None)

# Problem slugs (glowing_fiesta/exceptions.py and the services' Problem subclasses) -> reason.
_FAILURE_REASONS = {
    "invalid-input": "invalid",
    "parse-error": "invalid",
    "type-conflict": "type_conflict",
    "series-limit": "series_limit",
    "payload-too-large": "too_large",
    "unsupported-media-type": "unsupported_media",
    "rate-limited": "rate_limited",
    "database-unavailable": "database",
}
_ROLE_PATHS = {"worker": "async", "statsd": "statsd"}
_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})


def _on() -> bool:
    return settings.SELF_METRICS_RECORDING


# Label children and own-store tags per label values, looked up once: a request's figure then
# costs a dictionary lookup instead of prometheus_client's label checks. Bounded, since every
# label value is (methods x URL pattern names x status codes).
_request_series: dict[tuple[str, str, int], tuple[Any, tuple]] = {}
_path_series: dict[str, Any] = {}


def request_observe(*, method: str, route: str, status: int, seconds: float) -> None:
    """One HTTP request: `route` is the URL pattern's name (or "unmatched"), never a path."""
    if not _on():
        return
    if method not in _METHODS:
        method = "other"  # any token is a method: the label must not take them all
    series = _request_series.get((method, route, status))
    if series is None:
        child = figures.REQUEST_DURATION.labels(method, route, str(status))
        tags = (("method", method), ("route", route), ("status", str(status)))
        series = _request_series[(method, route, status)] = (child, tags)
    series[0].observe(seconds)
    store = sink.current()
    if store is not None:
        store.request(series[1], seconds * 1000)


def ingestion_failure(reason: str, amount: int = 1) -> None:
    """`amount` writes (or lines, or points) refused or lost; `reason` is one of the fixed
    reasons of figures.py."""
    if not _on() or amount <= 0:
        return
    figures.INGESTION_FAILURES.labels(reason).inc(amount)
    store = sink.current()
    if store is not None:
        store.count("ingestion_failures", (("reason", reason),), amount)


def problem_observed(*, exc: Exception, problem: Any, context: Mapping[str, Any]) -> None:
    """Called where errors are rendered: counts the failures of writes (POST to a view that
    needs the write scope) by reason. `problem` is None for an unexpected exception (a 500)."""
    request = context.get("request")
    view = context.get("view")
    if request is None or request.method != "POST":
        return
    if getattr(view, "required_scope", None) != "write":
        return
    if problem is None:
        reason = "database" if isinstance(exc, DatabaseError) else "other"
    elif problem.slug == "namespace-forbidden":
        reason = "namespace"
    elif problem.status in (401, 403):
        reason = "unauthenticated"
    else:
        reason = _FAILURE_REASONS.get(problem.slug, "other")
    ingestion_failure(reason)


@contextlib.contextmanager
def ingest_path(path: str) -> Iterator[None]:
    """Points stored inside this block are counted under `path` (the own figures: "self")."""
    token = _ingest_path.set(path)
    try:
        yield
    finally:
        _ingest_path.reset(token)


def points_ingested(count: int) -> None:
    if not _on() or not count:
        return
    path = _ingest_path.get() or _ROLE_PATHS.get(settings.PROCESS_ROLE, "sync")
    child = _path_series.get(path)
    if child is None:
        child = _path_series[path] = figures.POINTS_INGESTED.labels(path)
    child.inc(count)
    store = sink.current()
    if store is not None:
        store.count("points_ingested", (("path", path),), count)


def ingest_counted(function: F) -> F:
    """Decorate the one ingestion service: count the points of every call that returns."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        stored = function(*args, **kwargs)
        points_ingested(stored)
        return stored

    return wrapper  # type: ignore[return-value]


def db_write_timed(function: F) -> F:
    """Decorate the one write of points (`points_write(points)`): its time and size."""

    @functools.wraps(function)
    def wrapper(points: Sequence[Any], *args: Any, **kwargs: Any) -> Any:
        if not _on():
            return function(points, *args, **kwargs)
        started = time.perf_counter()
        result = function(points, *args, **kwargs)
        seconds = time.perf_counter() - started
        figures.DB_WRITE_LATENCY.observe(seconds)
        figures.DB_WRITE_POINTS.observe(len(points))
        store = sink.current()
        if store is not None:
            store.db_write(seconds * 1000, len(points))
        return result

    return wrapper  # type: ignore[return-value]


def aggregation_observe(*, interval: str, shape: str, seconds: float) -> None:
    """One aggregation query; `shape` is "rollup:<table>" or "percentile" (raw points)."""
    if not _on():
        return
    source = shape.removeprefix("rollup:") if shape.startswith("rollup:") else "raw"
    figures.AGGREGATION_LATENCY.labels(interval, source).observe(seconds)
    store = sink.current()
    if store is not None:
        tags = (("interval", interval), ("source", source))
        store.sample("aggregation_latency_ms", tags, seconds * 1000)


def retention_observe(*, deleted: Mapping[str, int]) -> None:
    """A retention run that finished: rows removed per table, and its time."""
    if not _on():
        return
    store = sink.current()
    for table, rows in deleted.items():
        if rows:
            figures.RETENTION_DELETED.labels(table).inc(rows)
            if store is not None:
                store.count("retention_deleted", (("table", table),), rows)
    figures.RETENTION_LAST_SUCCESS.set(time.time())


def compaction_observe(*, points: int, seconds: float) -> None:
    """A compaction run that compacted at least one day: its points and time."""
    if not _on():
        return
    figures.COMPACTION_POINTS.inc(points)
    figures.COMPACTION_LAST_SECONDS.set(seconds)
    figures.COMPACTION_LAST_RATE.set(points / seconds if seconds else 0.0)
    store = sink.current()
    if store is not None:
        store.count("compaction_points", (), points)
        store.sample("compaction_duration_ms", (), seconds * 1000)


def auth_failure(reason: str) -> None:
    """A request refused by API-key authentication or scope: missing, invalid, revoked,
    expired, in_url or insufficient_scope."""
    if not _on():
        return
    figures.AUTH_FAILURES.labels(reason).inc()
    store = sink.current()
    if store is not None:
        store.count("auth_failures", (("reason", reason),))


def rate_limited() -> None:
    if not _on():
        return
    figures.RATE_LIMITED.inc()
    store = sink.current()
    if store is not None:
        store.count("rate_limited", ())


def celery_task(*, task: str, outcome: str) -> None:
    if not _on():
        return
    figures.CELERY_TASKS.labels(task, outcome).inc()
    store = sink.current()
    if store is not None:
        store.count("celery_tasks", (("outcome", outcome), ("task", task)))


def rule_group_evaluated(*, group: str, seconds: float, failures: int, missed: int) -> None:
    """One evaluation of a rule group: its time, its failed rules, the ticks it missed."""
    if not _on():
        return
    figures.RULE_GROUP_DURATION.labels(group).observe(seconds)
    figures.RULE_GROUP_ITERATIONS.labels(group).inc()
    figures.RULE_EVALUATION_FAILURES.labels(group).inc(failures)
    figures.RULE_GROUP_ITERATIONS_MISSED.labels(group).inc(missed)
    store = sink.current()
    if store is not None:
        tags = (("rule_group", group),)
        store.sample("rule_group_duration_ms", tags, seconds * 1000)
        store.count("rule_group_iterations", tags)
        for name, amount in (("rule_evaluation_failures", failures), ("rule_group_iterations_missed", missed)):  # fmt: skip
            if amount:
                store.count(name, tags, amount)


def notifications_observe(*, alertmanager: str, sent: int = 0, errors: int = 0, dropped: int = 0) -> None:  # fmt: skip
    """Alerts delivered to, failed for, or dropped before one Alertmanager."""
    if not _on():
        return
    figures.NOTIFICATIONS_SENT.labels(alertmanager).inc(sent)
    figures.NOTIFICATIONS_ERRORS.labels(alertmanager).inc(errors)
    figures.NOTIFICATIONS_DROPPED.labels(alertmanager).inc(dropped)
    store = sink.current()
    if store is not None:
        tags = (("alertmanager", alertmanager),)
        for name, amount in (("notifications_sent", sent), ("notifications_errors", errors), ("notifications_dropped", dropped)):  # fmt: skip
            if amount:
                store.count(name, tags, amount)
