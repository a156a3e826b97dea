"""Reads of API keys, including the one lookup authentication makes per request."""

from __future__ import annotations

import time
from datetime import datetime

from django.conf import settings
from django.db.models import QuerySet
from django.utils import timezone

from . import keyformat
from .models import ApiKey, KeyStatus

# An HMAC to compare against when the prefix is unknown, so that case costs the same work as a
# wrong secret and timing does not tell which prefixes exist.
_DUMMY_HASH = "0" * 64


class KeyRejected(Exception):
    """The presented key cannot be used; `reason` is one of invalid, revoked, expired."""

    INVALID = "invalid"

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# In-process copies of key rows, by prefix: (when the copy expires, on the monotonic clock; the
# row, or None for a prefix that does not exist). Authentication then costs no round trip at all
# while a key is in use; a change made by another process (a revocation, a new rate limit) is
# seen once the copy expires, within API_KEY_CACHE_SECONDS (at most 5). gunicorn's sync workers
# serve one request at a time, so a plain dict is enough.
_rows: dict[str, tuple[float, ApiKey | None]] = {}
# Unknown prefixes are remembered too; a client spraying random ones cannot grow this without end.
ROWS_MAX = 10_000


def apikey_forget(*, prefix: str) -> None:
    """Drop this process's copy of a key row (after a change made here)."""
    _rows.pop(prefix, None)


def apikey_rows_clear() -> None:
    """Drop every copy (tests, and after settings change)."""
    _rows.clear()


def apikey_get_by_prefix(*, prefix: str) -> ApiKey | None:
    """The key with this prefix, from this process's copy if read in the last
    API_KEY_CACHE_SECONDS.

    A miss costs one query on the unique prefix index. Unknown prefixes are remembered too, so
    a client retrying a deleted key does not reach the database on every request.
    """
    seconds = settings.API_KEY_CACHE_SECONDS
    now = time.monotonic()
    if seconds:
        copy = _rows.get(prefix)
        if copy is not None and copy[0] > now:
            return copy[1]
    key = ApiKey.objects.filter(prefix=prefix).first()
    if seconds:
        if len(_rows) >= ROWS_MAX:
            for stale in [p for p, (expires, _) in _rows.items() if expires <= now]:
                del _rows[stale]
            if len(_rows) >= ROWS_MAX:
                _rows.clear()
        _rows[prefix] = (now + seconds, key)
    return key


def apikey_held(*, prefix: str) -> bool:
    """Whether this process holds a fresh copy of the row for `prefix` (a key, or that there is
    none), so that looking the key up costs no query."""
    copy = _rows.get(prefix)
    return bool(settings.API_KEY_CACHE_SECONDS) and copy is not None and copy[0] > time.monotonic()


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
