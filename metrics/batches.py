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
"""

from __future__ import annotations

import json
import logging
import random
import struct
import sys
import time
from array import array
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from celery import current_app
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError, connection, transaction
from django.db.models import Q
from django.utils import timezone

from glowing_fiesta.exceptions import Problem

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


@dataclass(frozen=True)
class BatchRun:
    """What one run of `batch_process` did: done, failed, retry (in `retry_in` s) or skipped."""

    batch_id: int
    result: str
    points: int = 0
    attempts: int = 0
    error: str = ""
    retry_in: float = 0.0


# --- payload ---------------------------------------------------------------------------------

# points_pack's layout, little-endian: version (u8), header length (u32), point count (u32), the
# header (JSON: [[type, name, tags], …] for each distinct series), then one array per column:
# series index (u32), value (f64), timestamp (i64 microseconds since the Unix epoch, UTC).
_PACK_VERSION = 1
_PACK_HEAD = struct.Struct("<BII")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def points_pack(points: Sequence[PointInput]) -> bytes:
    """Validated points as bytes: each distinct series named once, then columns of numbers.

    Floats and microsecond timestamps round-trip exactly; packing 1000 points is a fraction of a
    millisecond, and PostgreSQL stores the bytes without parsing them (unlike jsonb).
    """
    keys: dict[tuple, int] = {}
    series: list[list] = []
    index = array("I")
    values = array("d")
    stamps = array("q")
    for p in points:
        key = (p.type, p.name, *p.tags.items())
        position = keys.get(key)
        if position is None:
            position = keys[key] = len(series)
            series.append([p.type, p.name, dict(p.tags)])
        index.append(position)
        values.append(p.value)
        stamps.append((p.timestamp - _EPOCH) // _MICROSECOND)
    header = json.dumps(series, separators=(",", ":"), ensure_ascii=False).encode()
    columns = [index, values, stamps]
    if sys.byteorder != "little":
        for column in columns:
            column.byteswap()
    return b"".join(
        [_PACK_HEAD.pack(_PACK_VERSION, len(header), len(points)), header]
        + [column.tobytes() for column in columns]
    )


def points_unpack(packed: bytes) -> list[PointInput]:
    """The points of `points_pack`, in their order."""
    version, header_length, count = _PACK_HEAD.unpack_from(packed)
    if version != _PACK_VERSION:
        raise ValueError(f"unknown packed batch version {version}")
    offset = _PACK_HEAD.size
    series = json.loads(packed[offset : offset + header_length])
    offset += header_length
    columns = []
    for code in "Idq":
        column = array(code)
        end = offset + column.itemsize * count
        column.frombytes(packed[offset:end])
        offset = end
        columns.append(column)
    if sys.byteorder != "little":
        for column in columns:
            column.byteswap()
    index, values, stamps = columns
    return [
        PointInput(series[i][0], series[i][1], v, _EPOCH + _MICROSECOND * us, series[i][2])
        for i, v, us in zip(index, values, stamps, strict=True)
    ]


def points_decode(payload: Iterable[dict[str, Any]]) -> list[PointInput]:
    """The points of a batch queued as JSON, before batches were packed."""
    return [
        PointInput(
            type=item["type"],
            name=item["name"],
            value=float(item["value"]),
            timestamp=datetime.fromisoformat(item["timestamp"]),
            tags=item["tags"],
        )
        for item in payload
    ]


def batch_points(batch: IngestBatch) -> list[PointInput]:
    """The points of a queued batch, packed or (queued before packing) JSON."""
    if batch.packed is not None:
        return points_unpack(bytes(batch.packed))
    return points_decode(batch.payload)


# --- services --------------------------------------------------------------------------------


def batch_create(*, api_key_id: int, points: Sequence[PointInput], now: datetime) -> IngestBatch:
    """Store already-validated points as one pending batch; enqueue it once committed.

    Called inside the caller's transaction (with the idempotency record, when there is one):
    the message is sent only if that transaction commits, so a worker never looks for a row
    that does not exist, and a rolled-back request leaves nothing to process.
    """
    batch = IngestBatch.objects.create(
        api_key_id=api_key_id,
        packed=points_pack(points),
        points=len(points),
        created_at=now,
        updated_at=now,
    )
    transaction.on_commit(lambda: batch_dispatch(batch_id=batch.pk))
    return batch


def batch_dispatch(*, batch_id: int) -> bool:
    """Send the batch id to the workers. A broker failure is logged, not raised: the batch is
    committed, and the sweeper sends it again after QUEUE_STALE_SECONDS."""
    try:
        current_app.send_task(PROCESS_TASK, args=[batch_id])
    except Exception:
        logger.warning(
            "batch not enqueued; the sweeper will retry",
            extra={"batch_id": batch_id},
            exc_info=True,
        )
        return False
    return True


def batch_process(*, batch_id: int, now: datetime) -> BatchRun:
    """Claim the batch, write its points with `points_ingest` and mark it done, exactly once.

    Returns what happened; the caller (the Celery task) retries when `result` is "retry".
    After QUEUE_MAX_ATTEMPTS claims the batch is failed with its last error.
    """
    claim = _claim(batch_id, now)
    if isinstance(claim, BatchRun):
        return claim
    attempt = claim
    try:
        with transaction.atomic():
            batch = (
                IngestBatch.objects.select_for_update()
                .filter(pk=batch_id, state=State.RUNNING, attempts=attempt)
                .only("packed", "payload")
                .first()
            )
            if batch is None:
                return BatchRun(batch_id, "skipped", attempts=attempt, error="claim taken over")
            stored = points_ingest(points=batch_points(batch))
            if settings.QUEUE_TEST_DELAY_SECONDS and attempt == 1:
                time.sleep(settings.QUEUE_TEST_DELAY_SECONDS)
            _end(batch_id, attempt, State.DONE, error="", now=timezone.now())
        return BatchRun(batch_id, "done", points=stored, attempts=attempt)
    except TRANSIENT_ERRORS as exc:
        error = f"{type(exc).__name__}: {exc}".strip()
        _drop_broken_connection()
        if attempt >= settings.QUEUE_MAX_ATTEMPTS:
            _end_quietly(batch_id, attempt, State.FAILED, error)
            return BatchRun(batch_id, "failed", attempts=attempt, error=error)
        # Back to pending with the error shown; if even that fails (the database is away), the
        # retry can still claim the batch, since no transaction holds its row.
        _end_quietly(batch_id, attempt, State.PENDING, error)
        return BatchRun(
            batch_id, "retry", attempts=attempt, error=error, retry_in=retry_delay(attempt)
        )
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


def _claim(batch_id: int, now: datetime) -> int | BatchRun:
    """Take the batch for one attempt; return the attempt's number, or why not."""
    with transaction.atomic():
        batch = (
            IngestBatch.objects.select_for_update(skip_locked=True)
            .filter(pk=batch_id)
            .only("state", "attempts", "error")
            .first()
        )
        if batch is None:  # deleted by retention, or being written by a live worker right now
            return BatchRun(batch_id, "skipped")
        if batch.state in (State.DONE, State.FAILED):
            return BatchRun(batch_id, "skipped", attempts=batch.attempts)
        if batch.attempts >= settings.QUEUE_MAX_ATTEMPTS:
            # Every attempt died with its worker (or the limit was lowered): stop here, or a
            # batch that kills its worker would do so for ever.
            last = batch.error or "the worker stopped during the attempt"
            error = f"Gave up after {batch.attempts} attempts; last error: {last}"
            IngestBatch.objects.filter(pk=batch_id).update(
                state=State.FAILED, error=error, updated_at=now
            )
            return BatchRun(batch_id, "failed", attempts=batch.attempts, error=error)
        attempt = batch.attempts + 1
        IngestBatch.objects.filter(pk=batch_id).update(
            state=State.RUNNING, attempts=attempt, claimed_at=now, updated_at=now
        )
    return attempt


def _end(batch_id: int, attempt: int, state: str, *, error: str, now: datetime) -> int:
    # Fenced by the claim's number: a batch taken over by a newer claim is not touched.
    changes: dict[str, Any] = {"state": state, "error": error, "updated_at": now}
    if state == State.DONE:
        changes["processed_at"] = now
    return IngestBatch.objects.filter(pk=batch_id, state=State.RUNNING, attempts=attempt).update(
        **changes
    )


def _end_quietly(batch_id: int, attempt: int, state: str, error: str) -> None:
    try:
        _end(batch_id, attempt, state, error=error, now=timezone.now())
    except DatabaseError:
        # The sweeper finds the batch still running once its claim is stale.
        logger.warning(
            "could not record the batch's outcome", extra={"batch_id": batch_id}, exc_info=True
        )


def _stale(now: datetime) -> Q:
    """Batches whose message may have been lost: pending ones untouched for QUEUE_STALE_SECONDS
    (Redis flushed or restarted, an enqueue that failed after the commit), and running ones
    claimed more than QUEUE_CLAIM_STALE_SECONDS ago (their worker died after the broker gave up
    on it)."""
    stale = now - timedelta(seconds=settings.QUEUE_STALE_SECONDS)
    claim_stale = now - timedelta(seconds=settings.QUEUE_CLAIM_STALE_SECONDS)
    return Q(state=State.PENDING, updated_at__lt=stale) | Q(
        state=State.RUNNING, updated_at__lt=stale, claimed_at__lt=claim_stale
    )


def batches_sweep(*, now: datetime, limit: int = SWEEP_LIMIT) -> list[int]:
    """Send again the batches whose message may have been lost (`_stale`); return their ids.

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
    while time.monotonic() < until:
        batch_id = (
            IngestBatch.objects.filter(_stale(now()))
            .order_by("updated_at")
            .values_list("pk", flat=True)
            .first()
        )
        if batch_id is None:
            break
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
