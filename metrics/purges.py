"""Deleting a metric: hidden at once, its rows purged just after, by a worker.

`DELETE /api/metrics/{name}` (and the admin's action) deletes the metric's row and its series
rows in one short transaction, and records a purge (`MetricPurge`) of their ids in it. From that
commit on the metric does not exist for any read, since every read starts from those rows, and a
write creates it anew under a new id (a write with cached ids finds them gone:
`storage.RefsGone`). The answer comes in milliseconds, however many points the metric had.

The points and rollups, millions of rows maybe, are deleted by the purge: a task sent when the
delete commits, which waits for the transactions open at that moment (a write in one of them may
still add rows under the old ids) and then deletes every row of those ids with the purge row, in
one transaction. The ids are never reused, so until then the rows belong to nothing a read can
reach. A purge whose message was lost (Redis restarted, a worker killed) is run by the sweeper,
which celery beat starts every minute.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta

from celery import current_app
from django.db import transaction

from . import storage
from .models import MetricPurge

logger = logging.getLogger(__name__)

PURGE_TASK = "metrics.purge"
# A purge older than this is taken to have lost its message; well above a purge's usual wait.
PURGE_STALE_SECONDS = 60


def purge_create(*, metric_id: int, now: datetime) -> int | None:
    """Hide the metric (its row and its series go) and record the purge of its points and
    rollups; the purge is sent to the workers once committed. None if there is no such metric."""
    purge_id = storage.metric_and_series_delete(metric_id, now=now)
    if purge_id is not None:
        transaction.on_commit(lambda: purge_dispatch(purge_id=purge_id))
    return purge_id


def purge_dispatch(*, purge_id: int) -> bool:
    """Send the purge to the workers; a broker failure is logged, the sweeper sends it later."""
    try:
        current_app.send_task(PURGE_TASK, args=[purge_id])
    except Exception:
        logger.warning(
            "purge not enqueued; the sweeper will run it",
            extra={"purge_id": purge_id},
            exc_info=True,
        )
        return False
    return True


def purge_run(*, purge_id: int) -> bool:
    """Delete the rows of one purge (see `storage.metric_rows_purge`); False if nothing to do."""
    started = time.perf_counter()
    done = storage.metric_rows_purge(purge_id)
    if done:
        logger.info(
            "metric purged",
            extra={
                "purge_id": purge_id,
                "duration_ms": round((time.perf_counter() - started) * 1000, 2),
            },
        )
    return done


def purges_sweep(*, now: datetime) -> list[int]:
    """Run the purges older than PURGE_STALE_SECONDS, oldest first; return the ids done."""
    cutoff = now - timedelta(seconds=PURGE_STALE_SECONDS)
    ids = list(
        MetricPurge.objects.filter(created_at__lt=cutoff)
        .order_by("created_at")
        .values_list("pk", flat=True)
    )
    return [purge_id for purge_id in ids if purge_run(purge_id=purge_id)]


def purges_pending() -> int:
    """Purges not yet done."""
    return MetricPurge.objects.count()
