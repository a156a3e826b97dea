"""Writes of metrics: every point, from any endpoint or the queue worker, is stored here."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType
from typing import NamedTuple

import psycopg.errors
from django.db import OperationalError, connection, transaction
from django.utils import timezone

from glowing_fiesta import monitoring
from glowing_fiesta.exceptions import Problem

from . import caches, partitions, purges, storage
from .models import Metric, MetricType, Series
from .selectors import metric_not_found

_NO_TAGS: Mapping[str, str] = MappingProxyType({})

# Runs of a metric delete cancelled by a deadlock before the error is let through.
DELETE_ATTEMPTS = 3


class PointInput(NamedTuple):
    """One validated point. `timestamp` is timezone-aware; tags are string → string, never
    changed once a point holds them (points of one series share one dict).

    A named tuple, not a dataclass: a batch makes a thousand, and a tuple is built in a third
    of the time of a frozen dataclass (0.23 against 0.61 µs here).
    """

    type: str
    name: str
    value: float
    timestamp: datetime
    tags: Mapping[str, str] = _NO_TAGS


class MetricTypeConflict(Problem):
    status = 409
    slug = "type-conflict"
    title = "Metric type conflict"


class SeriesLimitExceeded(Problem):
    status = 422
    slug = "series-limit"
    title = "Too many series"


@monitoring.ingest_counted
def points_ingest(*, points: Sequence[PointInput]) -> int:
    """Store the points, all or nothing, creating metrics and series on first write.

    Points, series, metrics and their rollups (minute, 15 minutes, hour, day) commit in one
    transaction, so a query right after the call sees them. Raises MetricTypeConflict (409)
    when a point's type differs from its metric's, SeriesLimitExceeded (422) past
    METRIC_MAX_SERIES tag sets.
    Returns the number of points stored. Ids cached by this process that another process has
    deleted since are found out by the write itself, which is then redone from the database.
    """
    if not points:
        return 0
    try:
        return _ingest(points)
    except storage.RefsGone:
        caches.caches_clear()
        return _ingest(points)


def _ingest(points: Sequence[PointInput]) -> int:
    wanted: dict[str, str] = {}
    conflicts: list[dict] = []
    for index, point in enumerate(points):
        first = wanted.setdefault(point.name, point.type)
        if first != point.type:
            conflicts.append(_conflict_error(index, point.name, first, point.type))
    if conflicts:
        raise MetricTypeConflict(
            "A batch may not write one metric with two types.", errors=conflicts
        )
    rows = _rows_if_all_known(points)
    if rows is not None:
        # Metrics, series and partitions all exist (committed, cached): the write is one
        # statement, atomic by itself, so it skips the BEGIN and COMMIT round trips. Inside a
        # caller's transaction it gets a savepoint, so a RefsGone leaves that transaction usable.
        savepoint = transaction.atomic() if connection.in_atomic_block else contextlib.nullcontext()
        with savepoint:
            storage.points_write(rows)
        return len(points)
    with transaction.atomic():
        metrics = storage.metrics_upsert(wanted)
        conflicts = [
            _conflict_error(index, p.name, metrics[p.name].type, p.type)
            for index, p in enumerate(points)
            if metrics[p.name].type != p.type
        ]
        if conflicts:
            first = conflicts[0]
            raise MetricTypeConflict(
                f"Metric {first['name']!r} is a {first['metric_type']}; "
                f"it cannot take a {first['point_type']} point.",
                errors=conflicts,
            )
        series_keys = {}
        point_keys = []
        for p in points:
            key = (metrics[p.name].id, storage.tags_hash(p.tags))
            series_keys.setdefault(key, p.tags)
            point_keys.append(key)
        by_id = {ref.id: ref for ref in metrics.values()}
        try:
            series = storage.series_upsert(series_keys, by_id)
        except storage.SeriesLimitReached as exc:
            raise SeriesLimitExceeded(
                f"Metric {exc.metric.name!r} already has its limit of {exc.limit} tag sets; "
                "this write would create more.",
                extra={"metric": exc.metric.name, "limit": exc.limit},
            ) from None
        storage.points_write(
            [_row(p, key[0], series[key]) for p, key in zip(points, point_keys, strict=True)]
        )
    return len(points)


def metric_delete(
    *, name: str, now: datetime | None = None, allowed: Callable[[str], bool] | None = None
) -> int:
    """Delete metric `name`: gone for every read and write from the commit, its points and
    rollups purged by a worker just after (metrics/purges.py). Returns the purge's id.

    Raises MetricNotFound (404) when there is no such metric, also when a concurrent delete
    removed it first, and, before any query, when `allowed` (a key's namespaces) refuses its
    name. Writes racing the delete either commit before it (and are purged with it) or after
    it (and create the metric anew); see `storage.metric_and_series_delete`.
    """
    if allowed is not None and not allowed(name):
        raise metric_not_found(name)  # outside the key's namespaces: as if there were none
    metric_id = Metric.objects.filter(name=name).values_list("id", flat=True).first()
    purge_id = None
    for attempt in range(DELETE_ATTEMPTS):
        try:
            purge_id = metric_id and purges.purge_create(
                metric_id=metric_id, now=now or timezone.now()
            )
            break
        except OperationalError as exc:
            # Writes with cached ids take no lock on the metric; should one still hold a row
            # the delete needs past lock_timeout (or in a cycle), the delete, rolled back, lets
            # it finish and simply runs again.
            retryable = (psycopg.errors.DeadlockDetected, psycopg.errors.LockNotAvailable)
            if not isinstance(exc.__cause__, retryable):
                raise
            if attempt == DELETE_ATTEMPTS - 1:
                raise
    if not purge_id:
        raise metric_not_found(name)
    return purge_id


def _row(point: PointInput, metric_id: int, series_id: int) -> storage.PointRow:
    return storage.PointRow(
        metric_id, series_id, float(point.value), point.timestamp.astimezone(UTC)
    )


def _rows_if_all_known(points: Sequence[PointInput]) -> list[storage.PointRow] | None:
    """The rows to write when a small write needs nothing created, else None."""
    if len(points) > storage.COPY_THRESHOLD:
        return None
    rows = []
    for p in points:
        metric = caches.metric_cached(p.name)
        if metric is None or metric.type != p.type:
            return None
        series_id = caches.series_cached((metric.id, storage.tags_hash(p.tags)))
        if series_id is None:
            return None
        rows.append(_row(p, metric.id, series_id))
    if not partitions.partitions_known({row.recorded_at.date() for row in rows}):
        return None
    return rows


def _conflict_error(index: int, name: str, metric_type: str, point_type: str) -> dict:
    return {
        "index": index,
        "field": "type",
        "name": name,
        "metric_type": metric_type,
        "point_type": point_type,
        "message": f"metric {name!r} is a {metric_type}, not a {point_type}",
    }


# --- the one refusal path of the protocols ---------------------------------------------------

# Why points of `points_ingest_partial` were not stored.
TYPE_CONFLICT = "type-conflict"  # the metric has the other type (metric_type: which, if known)
TWO_TYPES = "two-types"  # a new metric given both types in one write: which was meant is unknown
SERIES_LIMIT = "series-limit"  # the metric has METRIC_MAX_SERIES tag sets (limit: how many)
NAMESPACE = "namespace"  # the name is outside the sending key's namespaces


class Refusal(NamedTuple):
    """Why points of one metric were not stored.

    `metric_type` is the metric's type when it was known before the write, None when the
    conflict came from a write that committed in between; `detail` is the service's message.
    """

    reason: str
    name: str
    detail: str
    metric_type: str | None = None
    limit: int | None = None


@dataclass(frozen=True)
class PartialIngest:
    """What `points_ingest_partial` stored, and what it refused and why."""

    stored: int
    refused: list[tuple[int, Refusal]]  # (index in `points`, why), in the order refused
    derived_refused: dict[str, Refusal]  # the names of `derived` whose points were not made
    retries: int  # writes redone without what a concurrent write made impossible


def points_ingest_partial(
    *,
    points: Sequence[PointInput],
    derived: Mapping[str, str] | None = None,
    derive: Callable[[AbstractSet[str]], Sequence[PointInput]] | None = None,
    trim_series: bool = False,
    allowed: Callable[[str], bool] | None = None,
) -> PartialIngest:
    """Store what can be stored of `points`; return what was refused and why.

    The one write path of every protocol (the JSON endpoints refuse a whole batch instead).
    Points whose metric exists with the other type (one look-up), or whose new metric is
    given both types in this write, are refused up front. Should the write still fail (a
    metric created with the other type meanwhile, a series limit reached), it is redone
    without that metric, each round refusing one more, so this ends. Past a metric's series
    limit, `trim_series` keeps its existing series and the first new ones that fit (StatsD has
    no sender to tell); otherwise the metric's points are refused whole, its sender being told
    which metric and why.

    `derive`, when given, makes more points inside the write's transaction, `derived` naming
    their metrics and types (screened like the points): it is called with the names refused so
    far, so that the rows it locks (cumulative streams) stay locked until its points commit.

    `allowed`, when given, is the sending key's namespaces (apikeys.namespaces): the points of
    a name it refuses are refused first (reason NAMESPACE), before anything is looked up.
    """
    derived = derived or {}
    wanted: dict[str, set[str]] = {}
    for point in points:
        wanted.setdefault(point.name, set()).add(point.type)
    for name, metric_type in derived.items():
        wanted.setdefault(name, set()).add(metric_type)
    excluded: dict[str, Refusal] = {}  # every point of these is refused
    if allowed is not None:
        for name in [name for name in wanted if not allowed(name)]:
            excluded[name] = Refusal(
                NAMESPACE, name, f"Metric {name!r} is outside this key's namespaces."
            )
            del wanted[name]
    existing = _existing_types(wanted)
    typed: dict[str, Refusal] = {}  # the points of another type than the metric's are refused
    for name, types in wanted.items():
        known = existing.get(name)
        if known is None and len(types) > 1:
            excluded[name] = Refusal(TWO_TYPES, name, f"Metric {name!r} is given two types.")
        elif known is not None and types != {known}:
            refusal = Refusal(TYPE_CONFLICT, name, f"Metric {name!r} is a {known}.", known)
            typed[name] = refusal
            if derived.get(name, known) != known:
                excluded[name] = refusal
    refused: list[tuple[int, Refusal]] = []
    pending: list[tuple[int, PointInput]] = []
    for index, point in enumerate(points):
        refusal = excluded.get(point.name) or typed.get(point.name)
        if refusal is not None and (
            refusal.reason != TYPE_CONFLICT or refusal.metric_type != point.type
        ):
            refused.append((index, refusal))
        else:
            pending.append((index, point))
    trimmed: set[str] = set()
    for retries in range(2 * len(wanted) + 1):
        try:
            stored = _ingest_without(pending, excluded.keys(), derive)
        except MetricTypeConflict as exc:
            raced = {error["name"] for error in exc.errors or ()} - excluded.keys()
            if not raced:
                raise
            for name in raced:
                excluded[name] = Refusal(
                    TYPE_CONFLICT, name, f"Metric {name!r} exists with the other type."
                )
        except SeriesLimitExceeded as exc:
            name, limit = exc.extra["metric"], exc.extra["limit"]
            if name in excluded:
                raise
            refusal = Refusal(SERIES_LIMIT, name, exc.detail, limit=limit)
            if trim_series and name not in trimmed:
                trimmed.add(name)
                pending = _series_trim(pending, refusal, refused)
                continue
            excluded[name] = refusal
        else:
            derived_refused = {n: r for n, r in excluded.items() if n in derived}
            outside = sum(1 for _, r in refused if r.reason == NAMESPACE)
            outside += sum(1 for r in derived_refused.values() if r.reason == NAMESPACE)
            monitoring.ingestion_failure("namespace", outside)
            return PartialIngest(stored, refused, derived_refused, retries)
        kept = []
        for index, point in pending:
            refusal = excluded.get(point.name)
            if refusal is None:
                kept.append((index, point))
            else:
                refused.append((index, refusal))
        pending = kept
    raise AssertionError("unreachable: each round refuses one more metric or trims one")


def _ingest_without(
    pending: Sequence[tuple[int, PointInput]],
    excluded: AbstractSet[str],
    derive: Callable[[AbstractSet[str]], Sequence[PointInput]] | None,
) -> int:
    points = [point for _, point in pending]
    if derive is None:
        return points_ingest(points=points)
    with transaction.atomic():
        return points_ingest(points=points + list(derive(excluded)))


def _existing_types(wanted: Iterable[str]) -> dict[str, str]:
    """The types of those of `wanted` that are metrics: from the cache, the rest in one query."""
    found: dict[str, str] = {}
    missing = []
    for name in wanted:
        ref = caches.metric_cached(name)
        if ref is None:
            missing.append(name)
        else:
            found[name] = ref.type
    if missing:
        found |= dict(Metric.objects.filter(name__in=missing).values_list("name", "type"))
    return found


def _series_trim(
    pending: list[tuple[int, PointInput]], refusal: Refusal, refused: list[tuple[int, Refusal]]
) -> list[tuple[int, PointInput]]:
    """The pending points less those of the metric's new series past its limit (to `refused`):
    its existing series and the first new ones that fit are kept."""
    name = refusal.name
    existing = set(Series.objects.filter(metric__name=name).values_list("tags_hash", flat=True))
    room = max(0, (refusal.limit or 0) - len(existing))
    admitted: set = set()
    kept = []
    for index, point in pending:
        if point.name == name:
            digest = storage.tags_hash(point.tags)
            if digest not in existing and digest not in admitted:
                if len(admitted) >= room:
                    refused.append((index, refusal))
                    continue
                admitted.add(digest)
        kept.append((index, point))
    return kept


__all__ = [
    "NAMESPACE",
    "SERIES_LIMIT",
    "TWO_TYPES",
    "TYPE_CONFLICT",
    "MetricType",
    "MetricTypeConflict",
    "PartialIngest",
    "PointInput",
    "Refusal",
    "SeriesLimitExceeded",
    "metric_delete",
    "points_ingest",
    "points_ingest_partial",
]
