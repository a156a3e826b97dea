"""The alerting SQL: the per-group evaluation lock and the notification queue's upsert.

Everything else goes through the ORM; these need PostgreSQL features it does not offer.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator, Sequence
from datetime import datetime

from django.db import connection

from glowing_fiesta import locks


def _group_lock_key(group_key: str) -> int:
    # A stable signed 32-bit key: Python's hash() differs between processes.
    return int.from_bytes(hashlib.sha256(group_key.encode()).digest()[:4], "big", signed=True)


@contextlib.contextmanager
def group_lock(group_key: str) -> Iterator[bool]:
    """Hold the group's session-level advisory lock if it is free; yield whether we got it.

    Session-level, not transaction-level: an evaluation runs its queries in read-only
    transactions of their own and commits each rule's points as it goes, and the lock must
    span all of them. If the process dies its connection goes, and the lock with it.
    """
    key = _group_lock_key(group_key)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", [locks.RULE_GROUP_NAMESPACE, key])
        acquired = cursor.fetchone()[0]
    try:
        yield acquired
    finally:
        if acquired:
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT pg_advisory_unlock(%s, %s)", [locks.RULE_GROUP_NAMESPACE, key]
                )


def notifications_queue(
    rows: Sequence[tuple[str, str, str, datetime]], *, capacity: int
) -> dict[str, int]:
    """Queue (url, fingerprint, payload JSON, queued_at) rows, the newest payload per alert
    replacing an older one still waiting; then keep at most `capacity` rows per url, dropping
    the oldest. Returns the number dropped per url.

    An upsert rather than an insert: during an outage only each alert's latest state is worth
    sending, and the queue's bound then counts alerts, not evaluations.
    """
    if not rows:
        return {}
    with connection.cursor() as cursor:
        cursor.executemany(
            """
            INSERT INTO alerting_notification (url, fingerprint, payload, queued_at)
            VALUES (%s, %s, %s::jsonb, %s)
            ON CONFLICT (url, fingerprint)
            DO UPDATE SET payload = excluded.payload, queued_at = excluded.queued_at
            """,
            rows,
        )
        dropped: dict[str, int] = {}
        for url in sorted({row[0] for row in rows}):
            # The rows past the newest `capacity` of this url, oldest first.
            cursor.execute(
                """
                DELETE FROM alerting_notification WHERE id IN (
                    SELECT id FROM alerting_notification WHERE url = %s
                    ORDER BY queued_at DESC, id DESC OFFSET %s
                )
                """,
                [url, capacity],
            )
            if cursor.rowcount:
                dropped[url] = cursor.rowcount
    return dropped


def notifications_delivered(ids_and_times: Sequence[tuple[int, datetime]]) -> None:
    """Remove delivered rows, unless a newer payload replaced one while it was on its way."""
    if not ids_and_times:
        return
    with connection.cursor() as cursor:
        cursor.execute(
            """
            DELETE FROM alerting_notification AS n
            USING unnest(%s::bigint[], %s::timestamptz[]) AS d(id, queued_at)
            WHERE n.id = d.id AND n.queued_at = d.queued_at
            """,
            [[i for i, _ in ids_and_times], [t for _, t in ids_and_times]],
        )
