"""Into the outbox and out to the workers: store a batch, send its id, one wake-up at a time."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from datetime import datetime

from celery import current_app
from django.conf import settings
from django.core.cache import caches
from django.db import transaction
from django_redis import get_redis_connection

from glowing_fiesta import failopen

from .. import packing
from ..models import IngestBatch
from ..services import PointInput

logger = logging.getLogger(__name__)

PROCESS_TASK = "metrics.ProcessMetricBatch"


def outbox_create(*, api_key_id: int, points: Sequence[PointInput], now: datetime) -> IngestBatch:
    """Store already-validated points as one pending batch; enqueue it once committed.

    Called inside the caller's transaction (with the idempotency record, when there is one):
    the message is sent only if that transaction commits, so a worker never looks for a row
    that does not exist, and a rolled-back request leaves nothing to process.
    """
    batch = IngestBatch.objects.create(
        api_key_id=api_key_id,
        packed=packing.points_pack(points),
        points=len(points),
        created_at=now,
        updated_at=now,
    )
    transaction.on_commit(lambda: outbox_dispatch(batch_id=batch.pk, pausable=True, coalesce=True))
    return batch


# After a failed send, requests skip the broker for this long: a hung or missing Redis then costs
# one socket timeout per process per pause, not one per request, so the web workers stay free to
# answer (a probe, a synchronous write) while it is away. The batches wait for the sweeper.
BROKER_PAUSE_SECONDS = 5.0
_broker_paused_until = 0.0


def broker_pause_reset() -> None:
    """Forget a previous broker failure (tests)."""
    global _broker_paused_until
    _broker_paused_until = 0.0


def _wake_key() -> str:
    # Per queue: tests, benchmarks and deployments sharing a Redis each have their own.
    return caches["default"].make_key(f"queue-wake:{current_app.conf.task_default_queue}")


def _wake_arm(batch_id: int) -> bool | None:
    """Mark a wake-up as queued: True if this call did (and must send it), False if one is
    queued already, None if Redis could not tell (then send: a spare message is harmless).
    The key expires after QUEUE_STALE_SECONDS, so a wake-up lost with its key still set delays
    nothing longer than the sweeper would."""
    return failopen.call(
        "queue wake",
        lambda: bool(
            get_redis_connection("default").set(
                _wake_key(), batch_id, nx=True, ex=settings.QUEUE_STALE_SECONDS
            )
        ),
        None,
    )


def wake_clear() -> None:
    """Called by a task as it starts, before it claims anything: a batch committed from now on
    sends a wake-up of its own, and one committed before is found by this task's claims."""
    failopen.call("queue wake", lambda: get_redis_connection("default").delete(_wake_key()), None)


def outbox_dispatch(
    *, batch_id: int, pausable: bool = False, coalesce: bool = False, countdown: float = 0
) -> bool:
    """Send the batch id to the workers. A broker failure is logged, not raised: the batch is
    committed, and the sweeper sends it again after QUEUE_STALE_SECONDS.

    `pausable` sends (a request's own batch) are skipped for BROKER_PAUSE_SECONDS after a failure;
    the sweeper's are always tried, since retrying is what it is for. `coalesce` sends nothing
    while a wake-up is queued (see metrics/batches/__init__.py): the task it starts finds the batch.
    """
    global _broker_paused_until
    if pausable and time.monotonic() < _broker_paused_until:
        logger.debug("batch not enqueued; broker paused", extra={"batch_id": batch_id})
        return False
    armed = _wake_arm(batch_id) if coalesce else None
    if armed is False:
        return True
    try:
        current_app.send_task(PROCESS_TASK, args=[batch_id], countdown=countdown or None)
    except Exception:
        if armed:
            wake_clear()  # no wake-up is queued after all
        _broker_paused_until = time.monotonic() + BROKER_PAUSE_SECONDS
        logger.warning(
            "batch not enqueued; the sweeper will retry",
            extra={"batch_id": batch_id, "pause_seconds": BROKER_PAUSE_SECONDS},
            exc_info=True,
        )
        return False
    return True


def outbox_dispatch_many(ids: Iterable[int]) -> None:
    """Send each of these batches (the sweeper's and the retry's sends, never paused)."""
    for batch_id in ids:
        outbox_dispatch(batch_id=batch_id)
