"""Daily partitions of the point tables: created ahead of the writes that need them.

`metric_points` and `metric_rollup_minute` are partitioned by UTC day; the SQL function
gf_ensure_day_partitions (migration 0001) creates missing days under an advisory lock, so
concurrent callers are safe. Each process remembers the days it has seen committed.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta

from django.db import connection, transaction

# Partitioned tables and how far around "now" their daily partitions must exist. Writes are
# accepted within ±7 days, so ±8 leaves a day of slack for clocks and a missed maintenance run.
PARTITIONED_TABLES = ("metric_points", "metric_rollup_minute")
PARTITION_DAYS_BACK = 8
PARTITION_DAYS_AHEAD = 8


_lock = threading.Lock()
_known_days: set[date] = set()


def partitions_ensure(*, now: datetime, days_back: int = PARTITION_DAYS_BACK,
                      days_ahead: int = PARTITION_DAYS_AHEAD) -> int:  # fmt: skip
    """Create any missing daily partition from `days_back` before `now` to `days_ahead` after.

    Returns how many partitions were created. Safe to run concurrently and repeatedly.
    """
    today = now.astimezone(UTC).date()
    return _ensure_days(today - timedelta(days=days_back), today + timedelta(days=days_ahead))


def _ensure_days(first: date, last: date) -> int:
    created = 0
    with connection.cursor() as cursor:
        for table in PARTITIONED_TABLES:
            cursor.execute("SELECT gf_ensure_day_partitions(%s, %s, %s)", [table, first, last])
            created += cursor.fetchone()[0]
    return created


def partitions_ensure_for(days: Iterable[date]) -> None:
    """Make sure the partitions for these days exist before a write touches them.

    The set of days already known is kept per process and only grows after a commit, so the
    common case costs nothing and a rolled-back creation is never remembered.
    """
    missing = set(days) - _known_days
    if not missing:
        return
    _ensure_days(min(missing), max(missing))

    def remember() -> None:
        with _lock:
            _known_days.update(missing)

    transaction.on_commit(remember)


def partitions_known(days: Iterable[date]) -> bool:
    """True when this process has seen every one of these days' partitions committed."""
    return _known_days.issuperset(days)


def partitions_forget() -> None:
    """Forget which partitions exist (after retention dropped some, or in tests)."""
    with _lock:
        _known_days.clear()
