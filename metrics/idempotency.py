"""Idempotent retries (the IETF Idempotency-Key draft, as Stripe does it).

The first request claims the key with an `in_flight` row, committed at once so a concurrent
retry sees it (409). The outcome is saved in the same transaction as the points it wrote, so a
replay never disagrees with the database. A 4xx from the domain is saved too; a crash or 5xx
releases the key so the client can retry. A claim left in flight by a dead process is taken over
after IDEMPOTENCY_LOCK_SECONDS.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import IntegrityError, transaction

from glowing_fiesta.exceptions import Problem, problem_body

from .models import IdempotencyRecord

KEY_MAX = 255
REMEMBER = timedelta(hours=24)
IDEMPOTENCY_LOCK_SECONDS = 60


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
    status: int
    body: dict[str, Any]
    replayed: bool = False


def fingerprint(method: str, path: str, data: Any) -> str:
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(f"{method} {path}\n{canonical}".encode()).hexdigest()


def check_key(key: str) -> str:
    if not 1 <= len(key) <= KEY_MAX or not key.isprintable():
        raise IdempotencyKeyInvalid(f"Idempotency-Key must be 1-{KEY_MAX} printable characters.")
    return key


def _claim(*, api_key_id: int, key: str, digest: str, now: datetime) -> Outcome | None:
    """Claim the key; return a saved outcome to replay, or None when the caller should run."""
    for _ in range(3):
        try:
            with transaction.atomic():
                IdempotencyRecord.objects.create(
                    api_key_id=api_key_id, key=key, fingerprint=digest,
                    created_at=now, updated_at=now,
                )  # fmt: skip
            return None
        except IntegrityError:
            pass
        record = IdempotencyRecord.objects.filter(api_key_id=api_key_id, key=key).first()
        if record is None:
            continue  # released between our insert and our read: try again
        if record.created_at < now - REMEMBER:
            IdempotencyRecord.objects.filter(pk=record.pk, created_at=record.created_at).delete()
            continue
        if record.fingerprint != digest:
            raise IdempotencyKeyReused(
                "This Idempotency-Key was used with a different request body in the last 24 hours."
            )
        if record.state == IdempotencyRecord.State.DONE:
            return Outcome(record.status_code, record.response, replayed=True)
        stale = now - timedelta(seconds=IDEMPOTENCY_LOCK_SECONDS)
        taken = IdempotencyRecord.objects.filter(
            pk=record.pk, state=IdempotencyRecord.State.IN_FLIGHT, updated_at__lt=stale
        ).update(updated_at=now)
        if taken:
            return None
        raise IdempotencyInFlight(
            "The first request with this Idempotency-Key has not finished; retry shortly.",
            headers={"Retry-After": "1"},
        )
    raise IdempotencyInFlight("Could not claim the Idempotency-Key; retry shortly.")


def _save(api_key_id: int, key: str, outcome: Outcome, now: datetime) -> None:
    IdempotencyRecord.objects.filter(api_key_id=api_key_id, key=key).update(
        state=IdempotencyRecord.State.DONE,
        status_code=outcome.status,
        response=outcome.body,
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
    """
    if key is None:
        return action()
    check_key(key)
    saved = _claim(api_key_id=api_key_id, key=key, digest=digest(), now=now)
    if saved is not None:
        return saved
    try:
        with transaction.atomic():
            outcome = action()
            _save(api_key_id, key, outcome, now)
        return outcome
    except Problem as problem:
        if problem.status < 500:
            body = problem_body(
                problem.status, problem.slug, problem.title, problem.detail,
                problem.errors, problem.extra,
            )  # fmt: skip
            _save(api_key_id, key, Outcome(problem.status, body), now)
        else:
            IdempotencyRecord.objects.filter(api_key_id=api_key_id, key=key).delete()
        raise
    except BaseException:
        IdempotencyRecord.objects.filter(api_key_id=api_key_id, key=key).delete()
        raise
