"""Retention: what expires, and the one service that removes it.

Each table that expires is one `PruneRule` in `PRUNE_RULES`: a table, the time column, how long
rows are kept and, for rollups, the bucket width. Adding a table is adding a rule.

Day-partitioned tables lose whole expired days by dropping the day's partition (no VACUUM debt;
the parent table is locked only for the milliseconds of a DETACH, see
`retention.storage.partition_drop`) and the remaining expired rows of the one partition that
straddles the cutoff by DELETE. Plain tables are pruned by DELETE.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.conf import settings

from glowing_fiesta import monitoring
from idempotency.services import REMEMBER as IDEMPOTENCY_REMEMBER
from metrics import partitions as metrics_partitions

from . import storage

logger = logging.getLogger("retention")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
QUARTER_HOUR = timedelta(minutes=15)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


@dataclass(frozen=True)
class PruneRule:
    """Rows of `table` whose `column` lies before the cutoff (now - keep) expire.

    `keep` is read when a run starts, so a changed setting applies to the next run.
    `bucket`: the column starts a rollup bucket of this width. A bucket expires only when it
    lies entirely before the cutoff; the bucket that straddles the cutoff is kept whole, since
    part of what it summarises is still within retention.
    `partitioned`: the table has daily partitions on `column` (named <table>_YYYYMMDD).
    `where`: an extra SQL condition on the rows that may expire (e.g. finished work only).
    """

    table: str
    column: str
    keep: Callable[[], timedelta]
    bucket: timedelta | None = None
    partitioned: bool = False
    where: str = ""

    def cutoff(self, now: datetime) -> datetime:
        """Rows with `column` < cutoff expire."""
        cutoff = now - self.keep()
        if self.bucket is not None:
            # Buckets are aligned on the UTC epoch (minute, 15 minutes, hour and day all are), so
            # a bucket starting before the floored cutoff ends at or before the cutoff itself.
            cutoff = _EPOCH + (cutoff - _EPOCH) // self.bucket * self.bucket
        return cutoff

    def condition(self, cutoff: datetime) -> tuple[str, list]:
        sql = f"{self.column} < %s"
        if self.where:
            sql += f" AND ({self.where})"
        return sql, [cutoff]


def _days(setting: str) -> Callable[[], timedelta]:
    return lambda: timedelta(days=getattr(settings, setting))


def _fixed(keep: timedelta) -> Callable[[], timedelta]:
    return lambda: keep


# Applied in this order; the result of a run has one count per table.
PRUNE_RULES: tuple[PruneRule, ...] = (
    PruneRule("metric_points", "recorded_at", _days("RETENTION_DAYS"), partitioned=True),
    PruneRule(
        "metric_rollup_minute", "bucket", _days("RETENTION_DAYS"), bucket=MINUTE, partitioned=True
    ),
    # Compacted days (metrics/compaction.py): their raw points and minute rollups, by day.
    PruneRule(
        "metric_points_compact", "hour", _days("RETENTION_DAYS"), bucket=HOUR, partitioned=True
    ),
    PruneRule("metric_rollup_15m", "bucket", _days("ROLLUP_RETENTION_DAYS"), bucket=QUARTER_HOUR),
    PruneRule("metric_rollup_hour", "bucket", _days("ROLLUP_RETENTION_DAYS"), bucket=HOUR),
    PruneRule("metric_rollup_day", "bucket", _days("ROLLUP_RETENTION_DAYS"), bucket=DAY),
    # A key is remembered 24 hours from its first request.
    PruneRule("idempotency_keys", "created_at", _fixed(IDEMPOTENCY_REMEMBER)),
    # Finished batches of the outbox, after QUEUE_KEEP_DAYS. Failed and unfinished batches stay
    # until an operator retries or deletes them.
    PruneRule("ingest_batches", "processed_at", _days("QUEUE_KEEP_DAYS"), where="state = 'done'"),
    # Counter streams (OTLP, remote write) silent for as long as points are kept; one seen
    # again after that is treated as a new stream (protocols/cumulative.py).
    PruneRule("cumulative_streams", "updated_at", _days("RETENTION_DAYS")),
)


def retention_apply(*, now: datetime, dry_run: bool = False) -> dict[str, int]:
    """Remove everything that has expired at `now`; return the rows removed per table.

    Raw points and minute rollups are kept RETENTION_DAYS, 15-minute, hour and day rollups
    ROLLUP_RETENTION_DAYS (see `PRUNE_RULES`). After a run, no expired row remains and no newer
    row was touched. Partitions for the days ahead are created too.

    Runs never overlap: a run that finds another in progress (PostgreSQL advisory lock) does
    nothing and returns {}. Each table is committed on its own, so an interrupted run keeps what
    it did and the next run finishes the job. With `dry_run`, counts what would be removed and
    changes nothing. Logs one JSON line with the counts.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    started = time.perf_counter()
    if dry_run:
        counts, partitions = _count_expired(now)
        _log(now, started, dry_run=True, counts=counts, partitions=partitions, lock_ms=0.0)
        return counts
    with storage.run_lock() as acquired:
        if not acquired:
            logger.info(
                "retention skipped: another run is in progress",
                extra={"event": "retention", "skipped": True},
            )
            return {}
        metrics_partitions.partitions_ensure(now=now)
        counts, partitions, lock_ms = _remove_expired(now)
    monitoring.retention_observe(deleted=counts)
    _log(now, started, dry_run=False, counts=counts, partitions=partitions, lock_ms=lock_ms)
    return counts


def _droppable(
    rule: PruneRule, cutoff: datetime, now: datetime, *, detached: bool = False
) -> list[str]:
    """The partitions of `rule.table` lying entirely before `cutoff` that may be dropped.

    Days the partition maintenance keeps (metrics.partitions.PARTITION_DAYS_BACK) are never
    dropped, only emptied, whatever RETENTION_DAYS: the hourly maintenance would create them
    again, and every process remembers which partitions exist, so a late write (a queued batch)
    in another process would fail on a partition dropped under it. With `detached`, the day
    tables an interrupted run detached from the parent but did not drop.
    """
    first_kept = now.astimezone(UTC).date() - timedelta(days=metrics_partitions.PARTITION_DAYS_BACK)
    tables = storage.detached_tables if detached else storage.day_partitions
    return [
        name
        for name, day in tables(rule.table)
        if datetime(day.year, day.month, day.day, tzinfo=UTC) + DAY <= cutoff and day < first_kept
    ]


def _count_expired(now: datetime) -> tuple[dict[str, int], list[str]]:
    counts: dict[str, int] = {}
    partitions: list[str] = []
    for rule in PRUNE_RULES:
        if not storage.table_exists(rule.table):
            continue
        cutoff = rule.cutoff(now)
        counts[rule.table] = 0
        if rule.partitioned:
            partitions += _droppable(rule, cutoff, now)
            for table in _droppable(rule, cutoff, now, detached=True):
                partitions.append(table)
                counts[rule.table] += storage.table_rows(table)
        counts[rule.table] += storage.rows_count(rule.table, *rule.condition(cutoff))
    return counts, partitions


def _remove_expired(now: datetime) -> tuple[dict[str, int], list[str], float]:
    """Counts per table, the partitions dropped, and the longest parent-table lock of a drop."""
    counts: dict[str, int] = {}
    dropped: list[str] = []
    lock_ms = 0.0
    for rule in PRUNE_RULES:
        if not storage.table_exists(rule.table):
            continue
        cutoff = rule.cutoff(now)
        removed = 0
        if rule.partitioned:
            for table in _droppable(rule, cutoff, now, detached=True):
                removed += storage.table_rows(table)
                storage.detached_drop(table)
                dropped.append(table)
            for partition in _droppable(rule, cutoff, now):
                result = storage.partition_drop(rule.table, partition)
                if result is None:
                    continue  # the parent stayed busy: the DELETE below empties it instead
                removed += result.rows
                lock_ms = max(lock_ms, result.parent_lock_ms)
                dropped.append(partition)
        # With the expired days gone, partition pruning leaves this DELETE the one partition
        # that straddles the cutoff (and any a busy table kept from being dropped).
        removed += storage.rows_delete(rule.table, *rule.condition(cutoff))
        counts[rule.table] = removed
    if dropped:
        metrics_partitions.partitions_forget()
    return counts, dropped, lock_ms


def _log(
    now: datetime,
    started: float,
    *,
    dry_run: bool,
    counts: dict[str, int],
    partitions: list[str],
    lock_ms: float,
) -> None:
    logger.info(
        "retention dry run" if dry_run else "retention applied",
        extra={
            "event": "retention",
            "dry_run": dry_run,
            "now": now.isoformat(),
            ("would_delete" if dry_run else "deleted"): counts,
            ("would_drop_partitions" if dry_run else "dropped_partitions"): partitions,
            "duration_ms": round((time.perf_counter() - started) * 1000, 1),
            # The longest any drop held the parent table's ACCESS EXCLUSIVE lock.
            "parent_lock_ms": round(lock_ms, 1),
        },
    )
