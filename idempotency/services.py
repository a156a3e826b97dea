"""Idempotent retries (the IETF Idempotency-Key draft, as Stripe does it).

A request's claim on its key and the writes it makes share one transaction:

1. The claim inserts the key's row (`in_flight`) in a transaction that stays open while the
   request runs. A concurrent request with the same key waits on that row (PostgreSQL waits on
   the uncommitted unique key) for at most the write path's `lock_timeout`, then gets 409 with
   Retry-After. A process that dies mid-request takes its open transaction, and so its claim,
   with it: the next retry runs at once instead of waiting for a claim to go stale.
2. The outcome is saved as `done` in the same transaction as the points, so a replay never
   disagrees with the database, and a commit is never followed by a release: whatever happens
   after the commit (an on-commit hook that hangs, a worker killed by gunicorn), a retry replays.
3. A refused request (a domain 4xx) writes nothing, inside a savepoint, and its outcome is saved.
   A 5xx or any other error rolls the whole transaction back, claim included, so the retry runs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import psycopg.errors
from django.db import OperationalError, connection, transaction

from glowing_fiesta.exceptions import Problem, problem_body
from glowing_fiesta.parsers import TypedBody

from .models import IdempotencyRecord

KEY_MAX = 255
REMEMBER = timedelta(hours=24)


class IdempotencyKeyInvalid(Problem):
    status = 400
    slug = "idempotency-key-invalid"
    title = "Invalid Idempotency-Key"


class IdempotencyKeyReused(Problem):
    status = 422
    slug = "idempotency-key-reused"
    title = "Idempotency-Key reused with another request"


class IdempotencyInFlight(Problem):
    status = 409
    slug = "idempotency-in-flight"
    title = "A request with this Idempotency-Key is still in progress"


@dataclass(frozen=True)
class Outcome:
    """What a request answered: replayed as is (with Idempotent-Replayed) on a retry."""

    status: int
    body: Any
    headers: Mapping[str, str] = field(default_factory=dict)
    replayed: bool = False


def fingerprint(method: str, path: str, data: Any) -> str:
    if isinstance(data, TypedBody):
        data = data.plain()  # the same digest whichever decoder read the body
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(f"{method} {path}\n{canonical}".encode()).hexdigest()


def check_key(key: str) -> str:
    if not 1 <= len(key) <= KEY_MAX or not key.isprintable():
        raise IdempotencyKeyInvalid(f"Idempotency-Key must be 1-{KEY_MAX} printable characters.")
    return key


# ON CONFLICT DO NOTHING waits for a concurrent uncommitted insert of the same key, then returns
# no row if that one committed: the claim and the wait are one statement.
_CLAIM_SQL = """
    INSERT INTO idempotency_keys
        (api_key_id, key, fingerprint, state, headers, created_at, updated_at)
    VALUES (%s, %s, %s, 'in_flight', '{}', %s, %s)
    ON CONFLICT (api_key_id, key) DO NOTHING
    RETURNING id
"""


def _claim(*, api_key_id: int, key: str, digest: str, now: datetime) -> Outcome | None:
    """Claim the key in the open transaction; a saved outcome to replay, or None to run."""
    with connection.cursor() as cursor:
        cursor.execute(_CLAIM_SQL, [api_key_id, key, digest, now, now])
        if cursor.fetchone() is not None:
            return None
    record = IdempotencyRecord.objects.select_for_update().get(api_key_id=api_key_id, key=key)
    if record.created_at < now - REMEMBER or record.state != IdempotencyRecord.State.DONE:
        # Expired, or an in-flight row a transaction left committed: the key is free again.
        IdempotencyRecord.objects.filter(pk=record.pk).update(
            fingerprint=digest, state=IdempotencyRecord.State.IN_FLIGHT, status_code=None,
            response=None, headers={}, created_at=now, updated_at=now,
        )  # fmt: skip
        return None
    if record.fingerprint != digest:
        raise IdempotencyKeyReused(
            "This Idempotency-Key was used with a different request body in the last 24 hours."
        )
    return Outcome(record.status_code, record.response, record.headers, replayed=True)


def _save(api_key_id: int, key: str, outcome: Outcome, now: datetime) -> None:
    IdempotencyRecord.objects.filter(api_key_id=api_key_id, key=key).update(
        state=IdempotencyRecord.State.DONE,
        status_code=outcome.status,
        response=outcome.body,
        headers=dict(outcome.headers),
        updated_at=now,
    )


def idempotent_run(
    *,
    api_key_id: int,
    key: str | None,
    digest: Callable[[], str],
    now: datetime,
    action: Callable[[], Outcome],
) -> Outcome:
    """Run `action` at most once per (API key, Idempotency-Key); replay its outcome after.

    `digest` is called only when there is a key: fingerprinting a large body costs milliseconds.
    A domain Problem below 500 raised by `action` is saved as the outcome, then raised again.
    """
    if key is None:
        return action()
    check_key(key)
    fingerprint_ = digest()
    refused: Problem | None = None
    with transaction.atomic():
        try:
            saved = _claim(api_key_id=api_key_id, key=key, digest=fingerprint_, now=now)
        except OperationalError as exc:
            # Only the claim's wait means "the first request is still running"; a lock wait
            # in the request's own writes is a database problem like any other (503).
            if isinstance(exc.__cause__, psycopg.errors.LockNotAvailable):
                raise IdempotencyInFlight(
                    "The first request with this Idempotency-Key has not finished; retry shortly.",
                    headers={"Retry-After": "1"},
                ) from None
            raise
        if saved is not None:
            return saved
        try:
            with transaction.atomic():
                outcome = action()
        except Problem as problem:
            if problem.status >= 500:
                raise
            refused = problem
            body = problem_body(
                problem.status, problem.slug, problem.title, problem.detail,
                problem.errors, problem.extra,
            )  # fmt: skip
            outcome = Outcome(problem.status, body, problem.headers)
        _save(api_key_id, key, outcome, now)
    if refused is not None:
        raise refused
    return outcome
