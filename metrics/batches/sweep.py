"""Stale batches sent again (the sweeper) or drained by a worker; failed ones retried by hand."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q

from ..models import IngestBatch
from .dispatch import outbox_dispatch_many
from .process import OutboxRun, outbox_process

State = IngestBatch.State
SWEEP_LIMIT = 500


def _stale(now: datetime) -> Q:
    """Batches whose message may have been lost: pending or running ones untouched for
    QUEUE_STALE_SECONDS (Redis flushed or restarted, an enqueue that failed after the commit, a
    worker killed mid-batch). A live attempt holds its row locked while it writes, and callers
    skip locked rows, so a running batch found here has lost its worker."""
    stale = now - timedelta(seconds=settings.QUEUE_STALE_SECONDS)
    return Q(state__in=[State.PENDING, State.RUNNING], updated_at__lt=stale)


def outbox_sweep(*, now: datetime, limit: int = SWEEP_LIMIT) -> list[int]:
    """Send again the batches whose message may have been lost (`_stale`, and not locked by a
    live attempt); return their ids.

    Each batch is sent at most once per QUEUE_STALE_SECONDS, so a long backlog is not flooded
    with copies; a copy is harmless anyway. The limit bounds one sweep's messages, not how fast
    a backlog drains: each worker that runs one of them goes on with the other stale batches
    (`outbox_drain`), so recovery runs at the workers' pace.
    """
    with transaction.atomic():
        ids = list(
            IngestBatch.objects.select_for_update(skip_locked=True)
            .filter(_stale(now))
            .order_by("updated_at")
            .values_list("pk", flat=True)[:limit]
        )
        if ids:
            IngestBatch.objects.filter(pk__in=ids).update(updated_at=now)
            transaction.on_commit(lambda: outbox_dispatch_many(ids))
    return ids


def outbox_drain(*, now: Callable[[], datetime], until: float) -> list[OutboxRun]:
    """Process stale batches one after another until none is left or `until` (monotonic) passes.

    Run by a worker after its own batch: when messages were lost (a flushed broker), the batches
    behind them are written at the worker's pace instead of waiting for the sweeper to send
    each one. Claims skip batches another worker holds, so workers drain side by side.
    """
    runs: list[OutboxRun] = []
    seen: set[int] = set()
    while time.monotonic() < until:
        batch_id = (
            IngestBatch.objects.filter(_stale(now()))
            .exclude(pk__in=seen)
            .order_by("updated_at")
            .values_list("pk", flat=True)
            .first()
        )
        if batch_id is None:
            break
        # A batch another worker holds is skipped, and not looked at again by this drain.
        seen.add(batch_id)
        run = outbox_process(batch_id=batch_id, now=now())
        runs.append(run)
        if run.result == "retry":
            break  # the database is failing: the retry's backoff applies to the rest too
    return runs


def outbox_retry(*, batch_ids: Iterable[int], now: datetime) -> list[int]:
    """Give failed batches a fresh set of attempts and enqueue them; return the ids reset."""
    with transaction.atomic():
        ids = list(
            IngestBatch.objects.select_for_update()
            .filter(pk__in=list(batch_ids), state=State.FAILED)
            .values_list("pk", flat=True)
        )
        # The last error stays visible until the batch is done.
        IngestBatch.objects.filter(pk__in=ids).update(
            state=State.PENDING, attempts=0, claimed_at=None, updated_at=now
        )
        transaction.on_commit(lambda: outbox_dispatch_many(ids))
    return ids
