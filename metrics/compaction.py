"""Compaction of closed days: a day's raw points and minute rollups rewritten into
`metric_points_compact` (migration 0014), about a twentieth of their size.

A day can be compacted once no write can reach it: writes are accepted within ±7 days and the
partition maintenance keeps PARTITION_DAYS_BACK days, so the days before those are immutable.
Each day is swapped in one transaction (metrics.storage.day_compact), so a run is safe to repeat
and to kill at any moment. Readers see both forms through gf_points and gf_rollup_minute.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from glowing_fiesta import monitoring

from . import partitions, storage

logger = logging.getLogger(__name__)


def compactable_before(now: datetime) -> date:
    """The first UTC day not yet compactable at `now`: the days partition maintenance keeps
    (beyond the ±7-day write window) and later ones stay raw."""
    return now.astimezone(UTC).date() - timedelta(days=partitions.PARTITION_DAYS_BACK)


@dataclass
class CompactionResult:
    days: list[date] = field(default_factory=list)
    points: int = 0
    seconds: float = 0.0
    raw_bytes: int = 0
    compact_bytes: int = 0

    @property
    def points_per_second(self) -> float:
        return self.points / self.seconds if self.seconds else 0.0


def points_compact(*, now: datetime, dry_run: bool = False) -> CompactionResult:
    """Compact every closed day still raw at `now`, oldest first; with `dry_run`, list them
    and change nothing. A day another run holds is left to it."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    limit = compactable_before(now)
    days = [day for day in storage.raw_days() if day < limit]
    result = CompactionResult()
    if dry_run:
        result.days = days
        return result
    started = time.perf_counter()
    for day in days:
        day_started = time.perf_counter()
        try:
            done = storage.day_compact(
                day, seconds_so_far=lambda s=day_started: time.perf_counter() - s
            )
        except storage.CompactionMismatch as exc:
            # Nothing was changed: the day stays raw, read as before, and is tried again on
            # the next run (a negative and a positive zero in one minute is one such case).
            logger.error("day left raw", extra={"event": "compaction", "reason": str(exc)})
            continue
        except storage.CompactionBusy as exc:
            # Long reads kept a parent table locked through every attempt: the day stays raw
            # for the next run, the days after it are tried now.
            logger.warning(
                "day left raw: tables busy", extra={"event": "compaction", "statement": str(exc)}
            )
            continue
        if done is None:
            continue
        seconds = time.perf_counter() - day_started
        result.days.append(day)
        result.points += done.points
        result.raw_bytes += done.raw_bytes
        result.compact_bytes += done.compact_bytes
        logger.info(
            "day compacted",
            extra={
                "event": "compaction",
                "day": day.isoformat(),
                "points": done.points,
                "rows": done.rows,
                "raw_bytes": done.raw_bytes,
                "compact_bytes": done.compact_bytes,
                "duration_ms": round(seconds * 1000, 1),
            },
        )
    result.seconds = time.perf_counter() - started
    if result.days:
        partitions.partitions_forget()
        monitoring.compaction_observe(points=result.points, seconds=result.seconds)
    return result
