"""Reads of API keys, including the one lookup authentication makes per request."""

from __future__ import annotations

from datetime import datetime

from django.conf import settings
from django.core.cache import caches
from django.db.models import QuerySet
from django.utils import timezone

from . import cache, keyformat
from .models import ApiKey, KeyStatus

_NO_SUCH_PREFIX = "missing"
# An HMAC to compare against when the prefix is unknown, so that case costs the same work as a
# wrong secret and timing does not tell which prefixes exist.
_DUMMY_HASH = "0" * 64


class KeyRejected(Exception):
    """The presented key cannot be used; `reason` is one of invalid, revoked, expired."""

    INVALID = "invalid"

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def cache_key(prefix: str) -> str:
    return f"apikey:{prefix}"


def apikey_get_by_prefix(*, prefix: str) -> ApiKey | None:
    """The key with this prefix, from Redis if seen in the last API_KEY_CACHE_SECONDS.

    A miss costs one query on the unique prefix index. Unknown prefixes are remembered too, so
    a client retrying a deleted key does not reach the database on every request.
    """
    seconds = settings.API_KEY_CACHE_SECONDS
    redis = caches["default"]
    if seconds:
        cached = cache.call("apikey get", lambda: redis.get(cache_key(prefix)), None)
        if cached == _NO_SUCH_PREFIX:
            return None
        if isinstance(cached, ApiKey):
            return cached
    try:
        key = ApiKey.objects.get(prefix=prefix)
    except ApiKey.DoesNotExist:
        key = None
    if seconds:
        value = key if key is not None else _NO_SUCH_PREFIX
        cache.call("apikey set", lambda: redis.set(cache_key(prefix), value, seconds), None)
    return key


def apikey_get_active(*, raw_key: str, now: datetime | None = None) -> ApiKey:
    """The active key matching `raw_key`, or KeyRejected.

    A malformed key or a bad checksum is refused before any lookup. Unknown prefixes and wrong
    secrets give the same reason ("invalid"); "revoked" and "expired" are only ever told to a
    caller holding the full, correct key.
    """
    try:
        parsed = keyformat.parse(raw_key)
    except keyformat.MalformedKey:
        raise KeyRejected(KeyRejected.INVALID) from None
    key = apikey_get_by_prefix(prefix=parsed.prefix)
    matched = keyformat.matches(raw_key, key.key_hash if key is not None else _DUMMY_HASH)
    if key is None or not matched:
        raise KeyRejected(KeyRejected.INVALID)
    status = key.status(now=now or timezone.now())
    if status != KeyStatus.ACTIVE:
        raise KeyRejected(status.value)
    return key


def apikey_find(*, id_or_prefix: str) -> ApiKey | None:
    """A key by numeric id or by its 8-character prefix (what an operator has at hand)."""
    if id_or_prefix.isdigit() and len(id_or_prefix) != keyformat.PREFIX_LENGTH:
        return ApiKey.objects.filter(pk=int(id_or_prefix)).first()
    by_prefix = ApiKey.objects.filter(prefix=id_or_prefix).first()
    if by_prefix is None and id_or_prefix.isdigit():
        return ApiKey.objects.filter(pk=int(id_or_prefix)).first()
    return by_prefix


def apikey_list() -> QuerySet[ApiKey]:
    return ApiKey.objects.order_by("created_at", "id")
