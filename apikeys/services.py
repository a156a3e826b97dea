"""Writes to API keys: create, revoke, and the once-a-minute "last used" stamp."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime, timedelta

from django.conf import settings
from django.core.cache import caches
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from glowing_fiesta import failopen

from . import keyformat
from .models import ApiKey, Scope, default_scopes
from .namespaces import namespaces_check
from .selectors import apikey_forget

logger = logging.getLogger(__name__)

# last_used_at is for humans ("is this key still in use?"); minute resolution is plenty and
# spares the database a write per request.
LAST_USED_RESOLUTION = timedelta(seconds=60)
# Per process: when this process last stamped, or learned another had stamped, each key.
_stamp_seen: dict[int, datetime] = {}
_PREFIX_ATTEMPTS = 5


def scopes_check(scopes: Iterable[str]) -> list[str]:
    """The scopes without repeats, in order; ValueError naming any that does not exist."""
    chosen = list(dict.fromkeys(scopes))
    unknown = [scope for scope in chosen if scope not in Scope.values]
    if unknown:
        raise ValueError(
            f"unknown scope(s): {', '.join(unknown)}; choose from {', '.join(Scope.values)}"
        )
    return chosen


def apikey_create(
    *,
    name: str,
    scopes: Iterable[str] | None = None,
    rate_limit: int | None = None,
    expires_at: datetime | None = None,
    now: datetime | None = None,
    namespaces: Iterable[str] = (),
) -> tuple[ApiKey, str]:
    """Create a key and return it with its raw form, which is never available again.

    `scopes` defaults to write and read (admin is only ever granted by name), `rate_limit` (requests per minute) to
    API_KEY_DEFAULT_RATE_LIMIT. `namespaces` (metric-name prefixes, apikeys/namespaces.py)
    default to none: every metric. Only the prefix and an HMAC of the key are stored.
    """
    chosen = scopes_check(scopes if scopes is not None else default_scopes())
    prefixes = namespaces_check(namespaces)
    limit = settings.API_KEY_DEFAULT_RATE_LIMIT if rate_limit is None else rate_limit
    if limit < 1:
        raise ValueError("rate limit must be at least 1 request per minute")
    if not name.strip():
        raise ValueError("name must not be empty")
    for attempt in range(_PREFIX_ATTEMPTS):
        raw = keyformat.generate()
        prefix = keyformat.parse(raw).prefix
        try:
            # A savepoint, so a prefix collision (1 in 62**8 per key) leaves an outer
            # transaction usable for the retry.
            with transaction.atomic():
                key = ApiKey.objects.create(
                    name=name.strip(),
                    prefix=prefix,
                    key_hash=keyformat.digest(raw),
                    scopes=chosen,
                    namespaces=prefixes,
                    rate_limit=limit,
                    expires_at=expires_at,
                    created_at=now or timezone.now(),
                )
        except IntegrityError:
            if attempt == _PREFIX_ATTEMPTS - 1:
                raise
            continue
        logger.info("api key created", extra={"api_key_id": key.pk, "api_key_prefix": prefix})
        return key, raw
    raise AssertionError("unreachable")  # pragma: no cover


def apikey_update(
    *,
    key: ApiKey,
    name: str,
    scopes: Iterable[str],
    rate_limit: int,
    expires_at: datetime | None,
    namespaces: Iterable[str] | None = None,
) -> ApiKey:
    """Change a key's settings (never its secret); takes effect within API_KEY_CACHE_SECONDS.
    `namespaces` None leaves them as they are."""
    if rate_limit < 1:
        raise ValueError("rate limit must be at least 1 request per minute")
    if not name.strip():
        raise ValueError("name must not be empty")
    key.name = name.strip()
    key.scopes = scopes_check(scopes)
    if namespaces is not None:
        key.namespaces = namespaces_check(namespaces)
    key.rate_limit = rate_limit
    key.expires_at = expires_at
    key.save(update_fields=["name", "scopes", "namespaces", "rate_limit", "expires_at"])
    _forget(key)
    return key


def _forget(key: ApiKey) -> None:
    # This process sees the change at once; other processes' copies expire within
    # API_KEY_CACHE_SECONDS.
    apikey_forget(prefix=key.prefix)


def apikey_revoke(*, key: ApiKey, now: datetime | None = None) -> bool:
    """Revoke `key`; False if it already was.

    Takes effect at once in this process and within API_KEY_CACHE_SECONDS (5) in every other.
    """
    now = now or timezone.now()
    revoked = ApiKey.objects.filter(pk=key.pk, revoked_at__isnull=True).update(revoked_at=now)
    if revoked:
        key.revoked_at = now
        logger.info("api key revoked", extra={"api_key_id": key.pk, "api_key_prefix": key.prefix})
    _forget(key)
    return bool(revoked)


def apikey_mark_used(*, key: ApiKey, now: datetime | None = None) -> bool:
    """Stamp last_used_at, at most once a minute per key; True if this call wrote it.

    Four guards keep this off the hot path: the row in hand (fresh or cached) already says
    whether a minute has passed; so does what this process last learned; a Redis marker lets
    one request per minute through across processes; the conditional UPDATE settles any race
    that is left.
    """
    now = now or timezone.now()
    cutoff = now - LAST_USED_RESOLUTION
    if key.last_used_at is not None and key.last_used_at >= cutoff:
        return False
    # A cached row keeps an old last_used_at after another process stamped it; what this
    # process last learned spares Redis a round trip on every request of that minute.
    seen = _stamp_seen.get(key.pk)
    if seen is not None and seen >= cutoff:
        return False
    redis = caches["default"]
    marker = f"apikey:used:{key.prefix}"
    timeout = int(LAST_USED_RESOLUTION.total_seconds())
    _stamp_seen[key.pk] = now
    if not failopen.call("apikey mark used", lambda: redis.add(marker, 1, timeout), True):
        return False
    updated = (
        ApiKey.objects.filter(pk=key.pk)
        .filter(Q(last_used_at__isnull=True) | Q(last_used_at__lt=cutoff))
        .update(last_used_at=now)
    )
    if updated:
        key.last_used_at = now
    return bool(updated)
