"""Per-key request rate limits: a fixed one-minute window per key, counted in Redis.

One round trip per request: the window's counter is created with its expiry and incremented in
one MULTI/EXEC (django-ratelimit's get_usage takes two, an ADD and then an INCR). The windows are
staggered per key the way django-ratelimit staggers them, so clients do not all reset at the same
second. When Redis cannot be reached the request is served uncounted: an outage of the cache must
not become an outage of the API.
"""

from __future__ import annotations

import logging
import time
import zlib
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import caches
from django.http import HttpRequest
from django_redis import get_redis_connection

from glowing_fiesta import monitoring
from glowing_fiesta.exceptions import TooManyRequests

from . import cache
from .models import ApiKey

logger = logging.getLogger(__name__)

GROUP = "apikeys.requests"
PERIOD_SECONDS = 60


@dataclass(frozen=True)
class RateUsage:
    limit: int
    remaining: int
    reset: int  # Unix time when the window ends
    retry_after: int  # seconds until then, at least 1
    exceeded: bool

    def headers(self) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset),
        }


def _counter_id(key: ApiKey) -> str:
    # The id alone would repeat when a database is recreated; the random prefix keeps a new key
    # from inheriting an old key's counter in a Redis that outlived it.
    return f"{key.pk}:{key.prefix}"


def window_end(counter_id: str, *, now: int, period: int = PERIOD_SECONDS) -> int:
    """When the current window of `counter_id` ends (Unix seconds, after `now`).

    Each counter's windows are shifted by a fixed offset from its CRC32, as django-ratelimit's
    are, so the keys of a fleet do not all start afresh at the same second.
    """
    end = now - now % period + zlib.crc32(counter_id.encode()) % period
    return end if end > now else end + period


def _count(counter_id: str, *, now: int) -> tuple[int, int]:
    """Add one to the counter's current window; return (count, seconds left in the window)."""
    end = window_end(counter_id, now=now)
    prefix = getattr(settings, "RATELIMIT_CACHE_PREFIX", "rl:")
    key = caches["default"].make_key(f"{prefix}{GROUP}:{counter_id}:{end}")
    pipe = get_redis_connection("default").pipeline(transaction=True)
    pipe.set(key, 0, ex=end - now + 1, nx=True)  # a second's grace, as django-ratelimit has
    pipe.incr(key)
    _, count = pipe.execute()
    return int(count), end - now


def ratelimit_hit(*, request: HttpRequest, key: ApiKey) -> RateUsage | None:
    """Count one request against `key`; None when Redis is unavailable (served uncounted)."""
    now = int(time.time())
    counted = cache.call("ratelimit", lambda: _count(_counter_id(key), now=now), None)
    if counted is None:
        return None
    count, time_left = counted
    return RateUsage(
        limit=key.rate_limit,
        remaining=max(key.rate_limit - count, 0),
        reset=now + time_left,
        retry_after=max(time_left, 1),
        exceeded=count > key.rate_limit,
    )


def ratelimit_enforce(*, request: HttpRequest, key: ApiKey) -> RateUsage | None:
    """Count the request; raise TooManyRequests (429 with Retry-After) when over the limit."""
    usage = ratelimit_hit(request=request, key=key)
    if usage is not None and usage.exceeded:
        monitoring.rate_limited()
        logger.info(
            "api key rate limited",
            extra={"api_key_id": key.pk, "api_key_prefix": key.prefix, "limit": usage.limit},
        )
        raise TooManyRequests(
            f"This API key may make {usage.limit} requests per minute; "
            f"retry in {usage.retry_after} s.",
            headers={**usage.headers(), "Retry-After": str(usage.retry_after)},
        )
    return usage
