"""Celery entry points for metrics: process a queued batch, sweep the outbox, purge deleted
metrics, keep partitions.

Tasks take ids (never points), call a service in metrics/batches/ or metrics/partitions.py, and
are the only place that retries. Every one of them is safe to run twice.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime
from typing import Any

from celery import Task, shared_task
from django.conf import settings
from django.db import OperationalError
from django.utils import timezone

from . import compaction, partitions, purges
from .batches import dispatch, process, sweep

logger = logging.getLogger(__name__)


@shared_task(
    bind=True,
    name=dispatch.PROCESS_TASK,
    # Attempts are counted in the batch row (QUEUE_MAX_ATTEMPTS), which survives lost messages.
    max_retries=None,
    soft_time_limit=settings.QUEUE_TASK_SOFT_TIME_LIMIT,
    time_limit=settings.QUEUE_TASK_TIME_LIMIT,
    acks_late=True,
    reject_on_worker_lost=True,
)
def process_metric_batch(self: Task, batch_id: int) -> str:
    """Write one queued batch (see `process.outbox_process`); retry transient errors with backoff.

    Then writes the other pending batches (`process.outbox_follow`) and the stale ones whose
    messages were lost (`sweep.outbox_drain`). Logs one JSON line per run with the batch's
    points, attempts and duration, and one per group followed.
    """
    started = time.perf_counter()
    # Before any claim: a batch committed after this sends a wake-up of its own.
    dispatch.wake_clear()
    try:
        run = process.outbox_process(batch_id=batch_id, now=timezone.now())
    except process.TRANSIENT_ERRORS as exc:
        # Failed before the batch could be claimed (the database is unreachable): nothing was
        # counted against the batch. Past a few tries the message is dropped; the batch stays
        # pending and the sweeper sends it again.
        raise self.retry(
            exc=exc,
            countdown=process.retry_delay(self.request.retries + 1),
            max_retries=settings.QUEUE_MAX_ATTEMPTS,
        ) from None
    _log_run(run, duration_ms=round((time.perf_counter() - started) * 1000, 2))
    if run.result == "retry":
        # Attempts given back (the database was away) keep the batch's own backoff short; the
        # task's retries still back off, so a long outage is polled ever more slowly.
        countdown = max(run.retry_in, process.retry_delay(self.request.retries + 1))
        raise self.retry(countdown=countdown)
    # The other pending batches, then those whose messages may have been lost, within half of
    # this task's time limit.
    until = time.monotonic() + settings.QUEUE_TASK_SOFT_TIME_LIMIT / 2
    for followed in process.outbox_follow(now=timezone.now, until=until):
        _log_run(followed, followed=True)
    drained = sweep.outbox_drain(now=timezone.now, until=until)
    if drained:
        logger.info(
            "stale batches drained",
            extra={"batches": len(drained), "results": sorted({r.result for r in drained})},
        )
    return run.result


def _log_run(run: process.OutboxRun, **fields: Any) -> None:
    """One JSON line for what a run (the task's own batch, or a group it followed) came to."""
    if run.result in ("failed", "retry"):
        level = logging.WARNING
    elif run.ended_before:
        # Already written, mostly with another batch's group: in a deep queue most messages
        # end so, and a line each would outnumber the batches that were written.
        level = logging.DEBUG
    else:
        level = logging.INFO
    logger.log(
        level,
        f"batch {run.result}",
        extra={
            "batch_id": run.batch_id,
            "result": run.result,
            "points": run.points,
            "attempts": run.attempts,
            "companions": run.companions,
            **fields,
            **({"error": run.error} if run.error else {}),
        },
    )


def _now(now: str | None) -> datetime:
    # Tasks carry JSON: an explicit "now" (for operators and tests) arrives as ISO 8601.
    return datetime.fromisoformat(now) if now else timezone.now()


@shared_task(name="metrics.batches_sweep")
def batches_sweep_task(now: str | None = None) -> int:
    """Send again the batches whose message may have been lost (celery beat, every 30 s)."""
    ids = sweep.outbox_sweep(now=_now(now))
    if ids:
        logger.info("batches sent again", extra={"batches": len(ids), "batch_ids": ids[:20]})
    return len(ids)


@shared_task(
    bind=True,
    name=purges.PURGE_TASK,
    max_retries=5,
    acks_late=True,
    reject_on_worker_lost=True,
)
def purge_metric(self: Task, purge_id: int) -> bool:
    """Delete the points and rollups of a deleted metric (see `purges.purge_run`)."""
    try:
        return purges.purge_run(purge_id=purge_id)
    except process.TRANSIENT_ERRORS as exc:
        # The purge row stays until its rows are gone; past these retries the sweeper runs it.
        raise self.retry(exc=exc, countdown=process.retry_delay(self.request.retries + 1)) from None


@shared_task(name="metrics.purges_sweep")
def purges_sweep_task(now: str | None = None) -> int:
    """Run the purges whose message may have been lost (celery beat, every minute)."""
    ids = purges.purges_sweep(now=_now(now))
    if ids:
        logger.info("purges run by the sweeper", extra={"purges": len(ids), "purge_ids": ids[:20]})
    return len(ids)


@shared_task(name="metrics.partitions_ensure")
def partitions_ensure_task() -> int:
    """Create the daily partitions around today that are missing (celery beat, hourly)."""
    return partitions.partitions_ensure(now=timezone.now())


@shared_task(
    name="metrics.points_compact",
    autoretry_for=(OperationalError,),
    retry_backoff=300,
    max_retries=3,
)
def points_compact_task(now: str | None = None) -> int:
    """Compact the closed days still raw (celery beat, daily); returns the days compacted. A
    run killed or retried redoes only the days it had not committed."""
    return len(compaction.points_compact(now=_now(now)).days)
