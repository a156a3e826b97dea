"""Claim a batch of the outbox, write its points with its companions, and end it, exactly once."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
import psycopg.errors
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError, connection, transaction
from django.db.models import F
from django.utils import timezone

from glowing_fiesta import monitoring
from glowing_fiesta.db import replica
from glowing_fiesta.exceptions import Problem

from .. import packing
from ..models import IngestBatch
from ..services import PointInput, points_ingest
from .dispatch import outbox_dispatch

logger = logging.getLogger(__name__)

State = IngestBatch.State

# Worth another attempt: a lost connection, a serialization failure or deadlock (psycopg's
# TransactionRollback is an OperationalError), a statement or lock timeout, a soft time limit.
# Anything else, a domain Problem above all (a type conflict since validation, the series limit),
# would fail the same way again, so it fails the batch at once.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OperationalError,
    InterfaceError,
    SoftTimeLimitExceeded,
)
RETRY_BACKOFF_SECONDS = 2
RETRY_BACKOFF_MAX_SECONDS = 60
# A deep queue is written in groups of batches of at most this many points (and batches).
GROUP_POINTS = 10_000
GROUP_BATCHES = 50


@dataclass(frozen=True)
class OutboxRun:
    """What one run of `outbox_process` did: done, failed, retry (in `retry_in` s) or skipped."""

    batch_id: int
    result: str
    points: int = 0
    attempts: int = 0
    error: str = ""
    retry_in: float = 0.0
    # Other batches written in the same transaction.
    companions: int = 0
    # Skipped because the batch had already ended (done or failed) before this run.
    ended_before: bool = False


def outbox_points(batch: IngestBatch) -> list[PointInput]:
    """The points of a queued batch, packed or (queued before packing) JSON."""
    if batch.packed is not None:
        return packing.points_unpack(bytes(batch.packed))
    return packing.points_decode(batch.payload)


def outbox_process(*, batch_id: int, now: datetime) -> OutboxRun:
    """Claim the batch, write its points with `points_ingest` and mark it done, exactly once.

    When other batches are pending (a deep queue), they are claimed with it, up to GROUP_POINTS
    points, and all are written in one transaction: one COPY, one rollup upsert and one commit
    instead of one each. Their own messages then find them done. If the group is refused (one of
    its batches breaks a rule), each batch is written alone, so one bad batch fails only itself.

    Returns what happened to `batch_id`; the caller (the Celery task) retries when `result` is
    "retry". After QUEUE_MAX_ATTEMPTS claims a batch is failed with its last error.
    """
    claim = _claim(batch_id, now)
    if isinstance(claim, OutboxRun):
        return claim
    return _run_claimed(batch_id, *claim, now=now)


def _run_claimed(batch_id: int, attempt: int, points: int, *, now: datetime) -> OutboxRun:
    """Write a claimed batch, with companions when others are pending (`outbox_process`)."""
    group = {batch_id: attempt, **_claim_companions(batch_id, points, now)}
    if len(group) > 1:
        try:
            written = _write(group)
        except TRANSIENT_ERRORS as exc:
            runs = {
                pk: _transient(pk, attempt, exc, counted=pk == batch_id)
                for pk, attempt in group.items()
            }
            return runs[batch_id]
        except Exception:
            _drop_broken_connection()
            logger.info("batch group refused; writing its batches one by one",
                        extra={"batch_id": batch_id, "batches": len(group)})  # fmt: skip
        else:
            return _done_or_skipped(batch_id, group[batch_id], written, companions=len(group) - 1)
    runs = {pk: _process_alone(pk, attempt) for pk, attempt in group.items()}
    return runs[batch_id]


def _process_alone(batch_id: int, attempt: int) -> OutboxRun:
    try:
        written = _write({batch_id: attempt})
    except TRANSIENT_ERRORS as exc:
        return _transient(batch_id, attempt, exc)
    except Problem as problem:
        error = f"{problem.title}: {problem.detail}"
        _end_quietly(batch_id, attempt, State.FAILED, error)
        return OutboxRun(batch_id, "failed", attempts=attempt, error=error)
    except Exception as exc:
        logger.exception("batch failed with an unexpected error", extra={"batch_id": batch_id})
        error = f"{type(exc).__name__}: {exc}"
        _drop_broken_connection()
        _end_quietly(batch_id, attempt, State.FAILED, error)
        return OutboxRun(batch_id, "failed", attempts=attempt, error=error)
    return _done_or_skipped(batch_id, attempt, written)


def _write(group: dict[int, int]) -> dict[int, int]:
    """Write the points of the batches still held by these claims ({id: attempt}) and mark them
    done, in one transaction; return {id: points} of those written."""
    with transaction.atomic():
        held = [
            batch
            for batch in IngestBatch.objects.select_for_update()
            .filter(pk__in=list(group), state=State.RUNNING)
            .only("attempts", "points", "packed", "payload", "api_key_id")
            .order_by("pk")
            # Fenced by the claim's number: a batch taken over by a newer claim is not written.
            if batch.attempts == group[batch.pk]
        ]
        if not held:
            return {}
        points_ingest(points=[point for batch in held for point in outbox_points(batch)])
        if settings.QUEUE_TEST_DELAY_SECONDS and min(group.values()) == 1:
            time.sleep(settings.QUEUE_TEST_DELAY_SECONDS)
        now = timezone.now()
        # The rows are locked by this transaction, so no other claim can have changed them.
        IngestBatch.objects.filter(pk__in=[batch.pk for batch in held]).update(
            state=State.DONE, error="", updated_at=now, processed_at=now
        )
    replica.writes_mark(*{batch.api_key_id for batch in held})
    return {batch.pk: batch.points for batch in held}


def _done_or_skipped(
    batch_id: int, attempt: int, written: dict[int, int], companions: int = 0
) -> OutboxRun:
    if batch_id not in written:
        return OutboxRun(batch_id, "skipped", attempts=attempt, error="claim taken over")
    return OutboxRun(
        batch_id, "done", points=written[batch_id], attempts=attempt, companions=companions
    )


def _database_away(exc: BaseException) -> bool:
    """True for failures that say nothing about the batch: the database could not be reached
    or a lock was not granted in time. A statement timeout, a deadlock or a serialization
    failure may be the batch's own doing, and counts as an attempt."""
    if isinstance(exc, InterfaceError):
        return True
    cause = exc.__cause__ if isinstance(exc.__cause__, psycopg.Error) else exc
    if isinstance(cause, psycopg.errors.LockNotAvailable):
        return True
    if not isinstance(cause, psycopg.OperationalError):
        return False
    # No SQLSTATE: the connection failed or broke; class 08, connection exceptions; 57P0x, the
    # server shutting down, crashed or starting up.
    state = cause.sqlstate
    return state is None or state.startswith("08") or state in {"57P01", "57P02", "57P03"}


def _transient(
    batch_id: int, attempt: int, exc: BaseException, *, counted: bool = True
) -> OutboxRun:
    """Put the batch back to pending for a retry, or fail it past QUEUE_MAX_ATTEMPTS.

    An attempt that failed because the database was away (or, in a group, because of another
    batch) is given back: a 202 is kept however long an outage or a lock lasts, while a batch
    that fails by itself still ends after QUEUE_MAX_ATTEMPTS.
    """
    error = f"{type(exc).__name__}: {exc}".strip()
    _drop_broken_connection()
    if counted and not _database_away(exc):
        if attempt >= settings.QUEUE_MAX_ATTEMPTS:
            _end_quietly(batch_id, attempt, State.FAILED, error)
            return OutboxRun(batch_id, "failed", attempts=attempt, error=error)
        kept = attempt
    else:
        kept = attempt - 1
    # Back to pending with the error shown; if even that fails (the database is away), the
    # retry can still claim the batch, since no transaction holds its row.
    _end_quietly(batch_id, attempt, State.PENDING, error, attempts=kept)
    return OutboxRun(batch_id, "retry", attempts=kept, error=error, retry_in=retry_delay(attempt))


def retry_delay(attempt: int) -> float:
    """Seconds before attempt `attempt` + 1: exponential, capped, with jitter so batches that
    deadlocked with each other do not collide again in step."""
    delay = min(RETRY_BACKOFF_MAX_SECONDS, RETRY_BACKOFF_SECONDS * 2 ** (max(attempt, 1) - 1))
    return delay * random.uniform(0.5, 1)


def _drop_broken_connection() -> None:
    # A connection broken by the error must not be reused for the bookkeeping that follows.
    # (Inside an outer transaction, as in tests, closing would break that transaction.)
    if not connection.in_atomic_block:
        connection.close_if_unusable_or_obsolete()


def _claim(batch_id: int, now: datetime) -> tuple[int, int] | OutboxRun:
    """Take the batch for one attempt; return the attempt's number and the batch's points, or
    why not."""
    # A deep queue's messages mostly find their batch already written with another's group:
    # one plain read tells, where the locking claim below takes a transaction of three round
    # trips. Done and failed are final here (only `outbox_retry` reopens a failed batch, and
    # it sends a message of its own), so reading them without the lock is safe.
    ended = (
        IngestBatch.objects.filter(pk=batch_id, state__in=[State.DONE, State.FAILED])
        .values_list("attempts", flat=True)
        .first()
    )
    if ended is not None:
        return OutboxRun(batch_id, "skipped", attempts=ended, ended_before=True)
    with transaction.atomic():
        batch = (
            IngestBatch.objects.select_for_update(skip_locked=True)
            .filter(pk=batch_id)
            .only("state", "attempts", "error", "points")
            .first()
        )
        if batch is None:  # deleted by retention, or being written by a live worker right now
            return OutboxRun(batch_id, "skipped")
        if batch.state in (State.DONE, State.FAILED):
            return OutboxRun(batch_id, "skipped", attempts=batch.attempts, ended_before=True)
        if batch.attempts >= settings.QUEUE_MAX_ATTEMPTS:
            # Every attempt died with its worker (or the limit was lowered): stop here, or a
            # batch that kills its worker would do so for ever.
            last = batch.error or "the worker stopped during the attempt"
            error = f"Gave up after {batch.attempts} attempts; last error: {last}"
            IngestBatch.objects.filter(pk=batch_id).update(
                state=State.FAILED, error=error, updated_at=now
            )
            monitoring.ingestion_failure("batch_failed")
            return OutboxRun(batch_id, "failed", attempts=batch.attempts, error=error)
        attempt = batch.attempts + 1
        IngestBatch.objects.filter(pk=batch_id).update(
            state=State.RUNNING, attempts=attempt, claimed_at=now, updated_at=now
        )
    return attempt, batch.points


def _claim_next(now: datetime) -> tuple[int, int, int] | None:
    """Claim the oldest pending batch that no other transaction holds; return (id, attempt,
    points), or None when there is none. Found and claimed under one lock, and only if still
    pending: a batch another worker has just claimed is never taken over here."""
    with transaction.atomic():
        batch = (
            IngestBatch.objects.select_for_update(skip_locked=True)
            .filter(state=State.PENDING, attempts__lt=settings.QUEUE_MAX_ATTEMPTS)
            .order_by("pk")
            .only("attempts", "points")
            .first()
        )
        if batch is None:
            return None
        attempt = batch.attempts + 1
        IngestBatch.objects.filter(pk=batch.pk).update(
            state=State.RUNNING, attempts=attempt, claimed_at=now, updated_at=now
        )
    return batch.pk, attempt, batch.points


def outbox_follow(*, now: Callable[[], datetime], until: float) -> list[OutboxRun]:
    """Write the pending batches, oldest first and in groups, until none is left or `until`
    (monotonic) passes; return what each group's first batch came to.

    Run by a task after its own batch. The first time it finds more, it wakes one more worker
    (a coalesced message), which does the same: idle workers join one by one while the queue is
    deep, and the messages stay few. Stopped by the clock with batches left, it wakes one more.
    """
    runs: list[OutboxRun] = []
    while True:
        if time.monotonic() >= until:
            _wake_for_pending()
            break
        claim = _claim_next(now())
        if claim is None:
            break
        if not runs:
            # For a batch still pending, not the one just claimed: a task started on the claimed
            # one before this write locks its row would take it over (fenced, but written twice).
            _wake_for_pending()
        run = _run_claimed(*claim, now=now())
        runs.append(run)
        if run.result == "retry":
            # The database is failing: this batch gets the retry's backoff in a message of its
            # own, and the rest waits for it.
            outbox_dispatch(batch_id=run.batch_id, pausable=True, countdown=run.retry_in)
            break
    return runs


def _wake_for_pending() -> None:
    pending = (
        IngestBatch.objects.filter(state=State.PENDING)
        .order_by("pk")
        .values_list("pk", flat=True)
        .first()
    )
    if pending is not None:
        outbox_dispatch(batch_id=pending, pausable=True, coalesce=True)


def _claim_companions(batch_id: int, points: int, now: datetime) -> dict[int, int]:
    """Claim other pending batches to write with `batch_id`, oldest first, while the group
    holds at most GROUP_POINTS points; return {id: attempt}. Batches held by another worker are
    skipped, and so are batches near their last attempt (they get a run of their own)."""
    if points >= GROUP_POINTS:
        return {}
    with transaction.atomic():
        candidates = (
            IngestBatch.objects.select_for_update(skip_locked=True)
            .filter(state=State.PENDING, attempts__lt=settings.QUEUE_MAX_ATTEMPTS - 1)
            .exclude(pk=batch_id)
            .order_by("pk")
            .values_list("pk", "points", "attempts")[:GROUP_BATCHES]
        )
        chosen: dict[int, int] = {}
        for pk, size, attempts in candidates:
            if points + size > GROUP_POINTS:
                break
            points += size
            chosen[pk] = attempts + 1
        if chosen:
            IngestBatch.objects.filter(pk__in=list(chosen)).update(
                state=State.RUNNING, attempts=F("attempts") + 1, claimed_at=now, updated_at=now
            )
    return chosen


def _end(
    batch_id: int,
    attempt: int,
    state: str,
    *,
    error: str,
    now: datetime,
    attempts: int | None = None,
) -> int:
    # Fenced by the claim's number: a batch taken over by a newer claim is not touched.
    changes: dict[str, Any] = {"state": state, "error": error, "updated_at": now}
    if attempts is not None:
        changes["attempts"] = attempts
    if state == State.DONE:
        changes["processed_at"] = now
    ended = IngestBatch.objects.filter(pk=batch_id, state=State.RUNNING, attempts=attempt).update(
        **changes
    )
    if ended and state == State.FAILED:
        monitoring.ingestion_failure("batch_failed")
    return ended


def _end_quietly(
    batch_id: int, attempt: int, state: str, error: str, *, attempts: int | None = None
) -> None:
    try:
        _end(batch_id, attempt, state, error=error, now=timezone.now(), attempts=attempts)
    except DatabaseError:
        # The sweeper finds the batch still running once its claim is stale.
        logger.warning(
            "could not record the batch's outcome", extra={"batch_id": batch_id}, exc_info=True
        )
