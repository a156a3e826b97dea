"""StatsD flushes stored: a `FlushWriter` writes one `Aggregator` flush's points to the database.

`FlushWriter` stores a flush with one `points_ingest` call, dropping names that conflict with an
existing metric's type and series past a metric's limit, and keeping the points for the next
flush when the database cannot be reached; `WriteOutcome` says what became of the points.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from django.db import DatabaseError, InterfaceError, OperationalError

from metrics import storage
from metrics.models import Metric, Series
from metrics.services import MetricTypeConflict, PointInput, SeriesLimitExceeded, points_ingest

# The parser's logger name too: one name to filter all the StatsD protocol's records by.
logger = logging.getLogger("protocols.statsd")


@dataclass
class WriteOutcome:
    """What became of one flush's points in the database."""

    stored: int = 0
    # name -> points dropped because the metric exists with the other type (or the flush held
    # both types for a new name)
    conflicts: dict[str, int] = field(default_factory=dict)
    # metric name -> points of its new series dropped past METRIC_MAX_SERIES
    series_limited: dict[str, int] = field(default_factory=dict)
    kept: int = 0  # points kept for the next flush: the database could not be reached
    lost: int = 0  # points dropped: more kept than the bound, or an unexpected database error
    error: str = ""


class FlushWriter:
    """Stores flushes with one `points_ingest` call each, from one thread other than the loop.

    The caller owns that thread's database connection (`close_old_connections` around each
    write, so one broken by an error or older than CONN_MAX_AGE is replaced).

    Names whose type conflicts with an existing metric are found first with one query and dropped
    for the flush; a metric past METRIC_MAX_SERIES keeps its existing series and as many new ones
    as fit, the other new series' points are dropped. When the database cannot be reached the
    points are kept for the next flush, at most `max_kept` of them (the newest).
    """

    def __init__(self, *, max_kept: int) -> None:
        self.max_kept = max_kept
        self._kept: list[PointInput] = []

    @property
    def kept(self) -> int:
        return len(self._kept)

    def write(self, points: Sequence[PointInput]) -> WriteOutcome:
        """Store the kept points and these; never raises."""
        outcome = WriteOutcome()
        pending = [*self._kept, *points]
        self._kept = []
        if not pending:
            return outcome
        try:
            pending = _drop_type_conflicts(pending, outcome)
            outcome.stored = _ingest(pending, outcome)
        except (OperationalError, InterfaceError) as exc:
            keep = pending[-self.max_kept :] if self.max_kept else []
            self._kept = keep
            outcome.kept = len(keep)
            outcome.lost = len(pending) - len(keep)
            outcome.error = str(exc).strip()[:500]
        except DatabaseError as exc:
            # Not a connection problem (a constraint, a bad value): written again it would fail
            # again and hold up every later flush, so these points are given up.
            outcome.lost = len(pending)
            outcome.error = str(exc).strip()[:500]
            logger.exception("statsd flush failed; its points are dropped")
        return outcome


def _drop_type_conflicts(points: list[PointInput], outcome: WriteOutcome) -> list[PointInput]:
    wanted: dict[str, set[str]] = {}
    for p in points:
        wanted.setdefault(p.name, set()).add(p.type)
    existing = dict(Metric.objects.filter(name__in=list(wanted)).values_list("name", "type"))
    allowed: dict[str, str | None] = {}
    for name, types in wanted.items():
        if name in existing:
            allowed[name] = existing[name]
        else:
            # A new name sent as a counter and as a gauge or timer in one interval: which type
            # was meant is unknown, so neither is created.
            allowed[name] = next(iter(types)) if len(types) == 1 else None
    return _keep(points, lambda p: allowed[p.name] == p.type, outcome.conflicts)


def _keep(
    points: list[PointInput], ok: Callable[[PointInput], bool], dropped: dict[str, int]
) -> list[PointInput]:
    kept = []
    for p in points:
        if ok(p):
            kept.append(p)
        else:
            dropped[p.name] = dropped.get(p.name, 0) + 1
    return kept


def _ingest(points: list[PointInput], outcome: WriteOutcome) -> int:
    # Each retry removes the points of at least one metric, so this ends; a race with another
    # writer (a metric created with the other type since the check) costs one more round.
    for _ in range(len({p.name for p in points}) + 1):
        if not points:
            return 0
        try:
            return points_ingest(points=points)
        except MetricTypeConflict as exc:
            names = {error["name"] for error in exc.errors or []}
            if not names:
                raise
            points = _keep(points, lambda p, names=names: p.name not in names, outcome.conflicts)
        except SeriesLimitExceeded as exc:
            name, limit = exc.extra["metric"], exc.extra["limit"]
            points = _trim_series(points, name, limit, outcome)
    outcome.lost += len(points)
    return 0


def _trim_series(
    points: list[PointInput], name: str, limit: int, outcome: WriteOutcome
) -> list[PointInput]:
    """Keep the metric's existing series and the first new ones that fit under its limit."""
    existing = set(Series.objects.filter(metric__name=name).values_list("tags_hash", flat=True))
    room = max(0, limit - len(existing))
    admitted: set = set()
    before = outcome.series_limited.get(name, 0)

    def ok(p: PointInput) -> bool:
        if p.name != name:
            return True
        digest = storage.tags_hash(p.tags)
        if digest in existing or digest in admitted:
            return True
        if len(admitted) < room:
            admitted.add(digest)
            return True
        return False

    kept = _keep(points, ok, outcome.series_limited)
    logger.warning(
        "statsd flush: metric %s has its limit of %d tag sets; points of %d new series dropped",
        name,
        limit,
        len({storage.tags_hash(p.tags) for p in points if p.name == name} - existing - admitted),
        extra={
            "metric": name,
            "limit": limit,
            "points_dropped": outcome.series_limited.get(name, 0) - before,
        },
    )
    return kept


__all__ = [
    "FlushWriter",
    "WriteOutcome",
]
