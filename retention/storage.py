"""The retention SQL: daily partitions found and dropped, expired rows counted and deleted.

Table and column names come from the prune rules in `retention.services`, never from input;
they are still quoted. Every function runs on Django's connection and expects its caller to hold
a transaction where it says so.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime

from django.db import OperationalError, connection, transaction

from glowing_fiesta import locks

# How long one attempt of a partition drop may wait for the parent table's ACCESS EXCLUSIVE
# lock. While the drop waits, new reads and writes of the parent queue behind it, so each wait
# stays within a write's latency budget; the drop tries DROP_ATTEMPTS times, DROP_RETRY_PAUSE_S
# apart, and past that the partition's rows are deleted instead and the empty partition goes on
# the next run.
DROP_LOCK_TIMEOUT_MS = 50
DROP_ATTEMPTS = 10
DROP_RETRY_PAUSE_S = 0.2
# Retention statements read or delete a whole day of rows: the per-statement limit that guards
# the API does not apply to them. Waits for row or table locks are still bounded.
LOCK_TIMEOUT_MS = 60_000

_PARTITION_NAME = re.compile(r"^(?P<parent>.+)_(?P<day>\d{8})$")
# lock_not_available (lock_timeout) and deadlock_detected: the drop gives up and lets be.
_GAVE_UP = {"55P03", "40P01"}


def _q(name: str) -> str:
    return connection.ops.quote_name(name)


@contextlib.contextmanager
def run_lock() -> Iterator[bool]:
    """Hold the session-level retention lock if it is free; yield whether we got it.

    Session-level rather than transaction-level: a run commits table by table, so a partition
    drop holds its table lock for milliseconds, not for the whole run. The lock goes with the
    connection if the process dies.
    """
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_try_advisory_lock(%s, %s)", [locks.NAMESPACE, locks.RETENTION_RUN]
        )
        acquired = cursor.fetchone()[0]
    try:
        yield acquired
    finally:
        if acquired:
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT pg_advisory_unlock(%s, %s)", [locks.NAMESPACE, locks.RETENTION_RUN]
                )


def table_exists(table: str) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass(%s) IS NOT NULL", [_q(table)])
        return cursor.fetchone()[0]


def day_partitions(parent: str) -> list[tuple[str, date]]:
    """The daily partitions of `parent` (named <parent>_YYYYMMDD) with their UTC day, oldest first."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
            WHERE i.inhparent = to_regclass(%s)
            """,
            [_q(parent)],
        )
        names = [row[0] for row in cursor.fetchall()]
    return _days_of(parent, names)


def _days_of(parent: str, names: list[str]) -> list[tuple[str, date]]:
    found = []
    for name in names:
        match = _PARTITION_NAME.match(name)
        if match and match["parent"] == parent:
            found.append((name, datetime.strptime(match["day"], "%Y%m%d").date()))
    return sorted(found, key=lambda item: item[1])


def set_timeouts() -> None:
    """Lift the statement timeout and bound lock waits for the current transaction."""
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL statement_timeout = 0")
        cursor.execute(f"SET LOCAL lock_timeout = {LOCK_TIMEOUT_MS}")


@dataclass(frozen=True)
class PartitionDropped:
    rows: int
    # From the moment the parent's ACCESS EXCLUSIVE lock was granted to the commit that
    # released it.
    parent_lock_ms: float


def partition_drop(parent: str, partition: str) -> PartitionDropped | None:
    """Count the rows of `partition` and drop it; None if the parent stayed busy too long.

    The partition alone is locked while its rows are counted (a fraction of a second or more
    for millions of rows), so no write can land in it between the count and the drop and the
    count is exact, while reads and writes of every other day go on: they lock only the
    partitions they touch. The parent's ACCESS EXCLUSIVE lock is taken, after short bounded
    waits, only to DETACH the partition and commit: a catalog change of a few milliseconds
    whatever the day's size. The detached table is dropped in a second transaction, whose
    commit unlinks the files (about 100 ms for a million rows) with no lock on the parent; a
    run interrupted between the two leaves a detached table that the next run drops
    (`detached_drop`).
    """
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            set_timeouts()
            cursor.execute(f"LOCK TABLE ONLY {_q(partition)} IN ACCESS EXCLUSIVE MODE")
            cursor.execute(f"SELECT count(*) FROM {_q(partition)}")  # noqa: S608 - fixed names
            rows = cursor.fetchone()[0]
            cursor.execute(f"SET LOCAL lock_timeout = {DROP_LOCK_TIMEOUT_MS}")
            if not _parent_lock(cursor, parent):
                return None
            locked = time.perf_counter()
            cursor.execute(f"ALTER TABLE {_q(parent)} DETACH PARTITION {_q(partition)}")
    except OperationalError as exc:
        # Waiting for the partition itself (a writer still in it, or a deadlock with one).
        if getattr(exc.__cause__, "sqlstate", None) in _GAVE_UP:
            return None
        raise
    parent_lock_ms = (time.perf_counter() - locked) * 1000
    detached_drop(partition)
    return PartitionDropped(rows, parent_lock_ms)


def detached_drop(table: str) -> None:
    """DROP a day table that is no longer a partition, in its own transaction."""
    with transaction.atomic(), connection.cursor() as cursor:
        set_timeouts()
        cursor.execute(f"DROP TABLE {_q(table)}")


def detached_tables(parent: str) -> list[tuple[str, date]]:
    """Day tables of `parent` (<parent>_YYYYMMDD) that are not partitions, with their UTC day.

    Left by a run interrupted between detaching a partition and dropping it: nothing reads or
    writes them any more.
    """
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT c.relname FROM pg_class c
            WHERE c.relkind = 'r' AND NOT c.relispartition
              AND c.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = current_schema())
              AND starts_with(c.relname, %s)
            """,
            [parent + "_"],
        )
        return _days_of(parent, [row[0] for row in cursor.fetchall()])


def table_rows(table: str) -> int:
    with transaction.atomic(), connection.cursor() as cursor:
        set_timeouts()
        cursor.execute(f"SELECT count(*) FROM {_q(table)}")  # noqa: S608 - catalog names
        return cursor.fetchone()[0]


def _parent_lock(cursor, parent: str) -> bool:
    """Take the parent's ACCESS EXCLUSIVE lock within DROP_ATTEMPTS waits of the lock timeout.

    ONLY: the lock is on the parent, not on every partition (which is what LOCK TABLE on a
    partitioned table does by default). Each failed wait is rolled back to a savepoint, so the
    partition stays locked, and counted, between attempts.
    """
    for attempt in range(DROP_ATTEMPTS):
        if attempt:
            time.sleep(DROP_RETRY_PAUSE_S)
        try:
            with transaction.atomic():
                cursor.execute(f"LOCK TABLE ONLY {_q(parent)} IN ACCESS EXCLUSIVE MODE")
            return True
        except OperationalError as exc:
            if getattr(exc.__cause__, "sqlstate", None) not in _GAVE_UP:
                raise
    return False


def rows_delete(table: str, condition: str, params: list) -> int:
    """DELETE the rows of `table` matching `condition`, in its own transaction; return how many."""
    with transaction.atomic(), connection.cursor() as cursor:
        set_timeouts()
        cursor.execute(f"DELETE FROM {_q(table)} WHERE {condition}", params)  # noqa: S608
        return cursor.rowcount


def rows_count(table: str, condition: str, params: list) -> int:
    with transaction.atomic(), connection.cursor() as cursor:
        set_timeouts()
        cursor.execute(f"SELECT count(*) FROM {_q(table)} WHERE {condition}", params)  # noqa: S608
        return cursor.fetchone()[0]
