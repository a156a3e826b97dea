"""StatsD flushes stored: a `FlushWriter` writes one `Aggregator` flush's points to the database.

`FlushWriter` stores a flush through `points_ingest_partial`, dropping names that conflict with
an existing metric's type and series past a metric's limit, and keeping the points for the next
flush when the database cannot be reached; `WriteOutcome` says what became of the points.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from django.db import DatabaseError, InterfaceError, OperationalError

from metrics import storage
from metrics.services import SERIES_LIMIT, PointInput, points_ingest_partial

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
    """Stores flushes, each with one `points_ingest_partial` call, from a thread other than the loop.

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


def _ingest(points: list[PointInput], outcome: WriteOutcome) -> int:
    result = points_ingest_partial(points=points, trim_series=True)
    limited: dict[str, tuple[int, set]] = {}  # name -> (limit, tag sets dropped)
    for index, refusal in result.refused:
        name = refusal.name
        if refusal.reason == SERIES_LIMIT:
            outcome.series_limited[name] = outcome.series_limited.get(name, 0) + 1
            limit, series = limited.setdefault(name, (refusal.limit or 0, set()))
            series.add(storage.tags_hash(points[index].tags))
        else:
            outcome.conflicts[name] = outcome.conflicts.get(name, 0) + 1
    for name, (limit, series) in limited.items():
        logger.warning(
            "statsd flush: metric %s has its limit of %d tag sets; points of %d new series dropped",
            name,
            limit,
            len(series),
            extra={"metric": name, "limit": limit, "points_dropped": outcome.series_limited[name]},
        )
    return result.stored


__all__ = [
    "FlushWriter",
    "WriteOutcome",
]
