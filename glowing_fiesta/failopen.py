"""Redis access for keys and rate limits that fails open.

Redis only speeds up authentication and counts requests; losing it must not stop the API. Every
call here catches connection errors, logs them, and returns a fallback. After a failure Redis is
skipped for a few seconds, so an unreachable server costs one timeout per process per pause
rather than several per request.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from django_redis.exceptions import ConnectionInterrupted
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

T = TypeVar("T")

PAUSE_SECONDS = 5.0
_CACHE_ERRORS = (RedisError, ConnectionInterrupted, OSError)

_paused_until = 0.0


def available() -> bool:
    return time.monotonic() >= _paused_until


def reset() -> None:
    """Forget a previous failure (tests, and after settings change)."""
    global _paused_until
    _paused_until = 0.0


def call(what: str, fn: Callable[[], T], fallback: T) -> T:
    """Run `fn` against the cache; on a connection error log it and return `fallback`."""
    global _paused_until
    if not available():
        return fallback
    try:
        return fn()
    except _CACHE_ERRORS as exc:
        _paused_until = time.monotonic() + PAUSE_SECONDS
        logger.error(
            "redis unavailable; serving without it",
            extra={
                "operation": what,
                "error": f"{type(exc).__name__}: {exc}",
                "pause_seconds": PAUSE_SECONDS,
            },
        )
        return fallback
