"""Asynchronous ingestion: the outbox of batches, how a worker claims one and how it ends.

A request sent with `Prefer: respond-async` is validated as usual, then stored as one
`IngestBatch` row (the outbox). Only after that commit is the batch id sent to Celery, so a
message can be lost (Redis restarted or flushed, a worker killed) but a batch cannot: the sweeper
sends unfinished batches again.

Running a batch twice never stores a point twice:

1. The claim raises `attempts` on a row it could lock with SKIP LOCKED. A row locked by another
   transaction is being written right now by a live worker; a `running` row that nobody holds has
   lost its worker (killed mid-batch) and is taken over at once. `attempts` numbers the claims.
2. The points are written, and the batch marked done, in one transaction that first locks the
   row *with the claim's number*: if a newer claim took the batch over, the old one writes nothing.
3. A message redelivered after that commit (a worker killed before its ack) finds `done`.

Messages wake workers; they do not carry the work. A request sends one only when no wake-up is
queued already (a Redis key, set with the send and cleared by the task that starts on it), and a
task goes on after its own batch with every pending one, in groups, waking one more worker when
it finds more. A burst of 1000 acknowledged batches so costs a handful of messages instead of
1000 (each an empty run for a batch already written with another's group). A batch left without
a message (a lost wake-up, a lost key) is sent again by the sweeper, as before.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
import psycopg.errors
from celery import current_app
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.core.cache import caches
from django.db import DatabaseError, InterfaceError, OperationalError, connection, transaction
from django.db.models import F, Q
from django.utils import timezone
from django_redis import get_redis_connection

from glowing_fiesta import failopen, monitoring
from glowing_fiesta.exceptions import Problem

from . import packing
from .models import IngestBatch
from .services import PointInput, points_ingest

logger = logging.getLogger(__name__)

State = IngestBatch.State
PROCESS_TASK = "metrics.ProcessMetricBatch"

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
SWEEP_LIMIT = 500
# A deep queue is written in groups of batches of at most this many points (and batches).
GROUP_POINTS = 10_000
GROUP_BATCHES = 50


@dataclass(frozen=True)
class BatchRun:
    """What one run of `batch_process` did: done, failed, retry (in `retry_in` s) or skipped."""

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


def batch_points(batch: IngestBatch) -> list[PointInput]:
    """The points of a queued batch, packed or (queued before packing) JSON."""
    if batch.packed is not None:
        return packing.points_unpack(bytes(batch.packed))
    return packing.points_decode(batch.payload)


# --- services --------------------------------------------------------------------------------


def batch_create(*, api_key_id: int, points: Sequence[PointInput], now: datetime) -> IngestBatch:
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
    transaction.on_commit(lambda: batch_dispatch(batch_id=batch.pk, pausable=True, coalesce=True))
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


def batch_dispatch(
    *, batch_id: int, pausable: bool = False, coalesce: bool = False, countdown: float = 0
) -> bool:
    """Send the batch id to the workers. A broker failure is logged, not raised: the batch is
    committed, and the sweeper sends it again after QUEUE_STALE_SECONDS.

    `pausable` sends (a request's own batch) are skipped for BROKER_PAUSE_SECONDS after a failure;
    the sweeper's are always tried, since retrying is what it is for. `coalesce` sends nothing
    while a wake-up is queued (see the module's docstring): the task it starts finds the batch.
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


def batch_process(*, batch_id: int, now: datetime) -> BatchRun:
    """Claim the batch, write its points with `points_ingest` and mark it done, exactly once.

    When other batches are pending (a deep queue), they are claimed with it, up to GROUP_POINTS
    points, and all are written in one transaction: one COPY, one rollup upsert and one commit
    instead of one each. Their own messages then find them done. If the group is refused (one of
    its batches breaks a rule), each batch is written alone, so one bad batch fails only itself.

    Returns what happened to `batch_id`; the caller (the Celery task) retries when `result` is
    "retry". After QUEUE_MAX_ATTEMPTS claims a batch is failed with its last error.
    """
    claim = _claim(batch_id, now)
    if isinstance(claim, BatchRun):
        return claim
    return _run_claimed(batch_id, *claim, now=now)


def _run_claimed(batch_id: int, attempt: int, points: int, *, now: datetime) -> BatchRun:
    """Write a claimed batch, with companions when others are pending (`batch_process`)."""
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


def _process_alone(batch_id: int, attempt: int) -> BatchRun:
    try:
        written = _write({batch_id: attempt})
    except TRANSIENT_ERRORS as exc:
        return _transient(batch_id, attempt, exc)
    except Problem as problem:
        error = f"{problem.title}: {problem.detail}"
        _end_quietly(batch_id, attempt, State.FAILED, error)
        return BatchRun(batch_id, "failed", attempts=attempt, error=error)
    except Exception as exc:
        logger.exception("batch failed with an unexpected error", extra={"batch_id": batch_id})
        error = f"{type(exc).__name__}: {exc}"
        _drop_broken_connection()
        _end_quietly(batch_id, attempt, State.FAILED, error)
        return BatchRun(batch_id, "failed", attempts=attempt, error=error)
    return _done_or_skipped(batch_id, attempt, written)


def _write(group: dict[int, int]) -> dict[int, int]:
    """Write the points of the batches still held by these claims ({id: attempt}) and mark them
    done, in one transaction; return {id: points} of those written."""
    with transaction.atomic():
        held = [
            batch
            for batch in IngestBatch.objects.select_for_update()
            .filter(pk__in=list(group), state=State.RUNNING)
            .only("attempts", "points", "packed", "payload")
            .order_by("pk")
            # Fenced by the claim's number: a batch taken over by a newer claim is not written.
            if batch.attempts == group[batch.pk]
        ]
        if not held:
            return {}
        points_ingest(points=[point for batch in held for point in batch_points(batch)])
        if settings.QUEUE_TEST_DELAY_SECONDS and min(group.values()) == 1:
            time.sleep(settings.QUEUE_TEST_DELAY_SECONDS)
        now = timezone.now()
        # The rows are locked by this transaction, so no other claim can have changed them.
        IngestBatch.objects.filter(pk__in=[batch.pk for batch in held]).update(
            state=State.DONE, error="", updated_at=now, processed_at=now
        )
    return {batch.pk: batch.points for batch in held}


def _done_or_skipped(
    batch_id: int, attempt: int, written: dict[int, int], companions: int = 0
) -> BatchRun:
    if batch_id not in written:
        return BatchRun(batch_id, "skipped", attempts=attempt, error="claim taken over")
    return BatchRun(
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
) -> BatchRun:
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
            return BatchRun(batch_id, "failed", attempts=attempt, error=error)
        kept = attempt
    else:
        kept = attempt - 1
    # Back to pending with the error shown; if even that fails (the database is away), the
    # retry can still claim the batch, since no transaction holds its row.
    _end_quietly(batch_id, attempt, State.PENDING, error, attempts=kept)
    return BatchRun(batch_id, "retry", attempts=kept, error=error, retry_in=retry_delay(attempt))


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


def _claim(batch_id: int, now: datetime) -> tuple[int, int] | BatchRun:
    """Take the batch for one attempt; return the attempt's number and the batch's points, or
    why not."""
    # A deep queue's messages mostly find their batch already written with another's group:
    # one plain read tells, where the locking claim below takes a transaction of three round
    # trips. Done and failed are final here (only `batches_retry` reopens a failed batch, and
    # it sends a message of its own), so reading them without the lock is safe.
    ended = (
        IngestBatch.objects.filter(pk=batch_id, state__in=[State.DONE, State.FAILED])
        .values_list("attempts", flat=True)
        .first()
    )
    if ended is not None:
        return BatchRun(batch_id, "skipped", attempts=ended, ended_before=True)
    with transaction.atomic():
        batch = (
            IngestBatch.objects.select_for_update(skip_locked=True)
            .filter(pk=batch_id)
            .only("state", "attempts", "error", "points")
            .first()
        )
        if batch is None:  # deleted by retention, or being written by a live worker right now
            return BatchRun(batch_id, "skipped")
        if batch.state in (State.DONE, State.FAILED):
            return BatchRun(batch_id, "skipped", attempts=batch.attempts, ended_before=True)
        if batch.attempts >= settings.QUEUE_MAX_ATTEMPTS:
            # Every attempt died with its worker (or the limit was lowered): stop here, or a
            # batch that kills its worker would do so for ever.
            last = batch.error or "the worker stopped during the attempt"
            error = f"Gave up after {batch.attempts} attempts; last error: {last}"
            IngestBatch.objects.filter(pk=batch_id).update(
                state=State.FAILED, error=error, updated_at=now
            )
            monitoring.ingestion_failure("batch_failed")
            return BatchRun(batch_id, "failed", attempts=batch.attempts, error=error)
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


def batches_follow(*, now: Callable[[], datetime], until: float) -> list[BatchRun]:
    """Write the pending batches, oldest first and in groups, until none is left or `until`
    (monotonic) passes; return what each group's first batch came to.

    Run by a task after its own batch. The first time it finds more, it wakes one more worker
    (a coalesced message), which does the same: idle workers join one by one while the queue is
    deep, and the messages stay few. Stopped by the clock with batches left, it wakes one more.
    """
    runs: list[BatchRun] = []
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
            batch_dispatch(batch_id=run.batch_id, pausable=True, countdown=run.retry_in)
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
        batch_dispatch(batch_id=pending, pausable=True, coalesce=True)


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


def _stale(now: datetime) -> Q:
    """Batches whose message may have been lost: pending or running ones untouched for
    QUEUE_STALE_SECONDS (Redis flushed or restarted, an enqueue that failed after the commit, a
    worker killed mid-batch). A live attempt holds its row locked while it writes, and callers
    skip locked rows, so a running batch found here has lost its worker."""
    stale = now - timedelta(seconds=settings.QUEUE_STALE_SECONDS)
    return Q(state__in=[State.PENDING, State.RUNNING], updated_at__lt=stale)


def batches_sweep(*, now: datetime, limit: int = SWEEP_LIMIT) -> list[int]:
    """Send again the batches whose message may have been lost (`_stale`, and not locked by a
    live attempt); return their ids.

    Each batch is sent at most once per QUEUE_STALE_SECONDS, so a long backlog is not flooded
    with copies; a copy is harmless anyway. The limit bounds one sweep's messages, not how fast
    a backlog drains: each worker that runs one of them goes on with the other stale batches
    (`batches_drain`), so recovery runs at the workers' pace.
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
            transaction.on_commit(lambda: _dispatch_all(ids))
    return ids


def batches_drain(*, now: Callable[[], datetime], until: float) -> list[BatchRun]:
    """Process stale batches one after another until none is left or `until` (monotonic) passes.

    Run by a worker after its own batch: when messages were lost (a flushed broker), the batches
    behind them are written at the worker's pace instead of waiting for the sweeper to send
    each one. Claims skip batches another worker holds, so workers drain side by side.
    """
    runs: list[BatchRun] = []
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
        run = batch_process(batch_id=batch_id, now=now())
        runs.append(run)
        if run.result == "retry":
            break  # the database is failing: the retry's backoff applies to the rest too
    return runs


def batches_retry(*, batch_ids: Iterable[int], now: datetime) -> list[int]:
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
        transaction.on_commit(lambda: _dispatch_all(ids))
    return ids


def _dispatch_all(ids: Iterable[int]) -> None:
    for batch_id in ids:
        batch_dispatch(batch_id=batch_id)
