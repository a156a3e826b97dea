"""Per-key request rate limits: a fixed one-minute window per key, counted in Redis.

One round trip per request: the window's counter is created with its expiry and incremented in
one MULTI/EXEC (django-ratelimit's get_usage takes two, an ADD and then an INCR). When the
address's failed authentications are still to be checked (the key's row was in this process, so
authentication made no round trip of its own), one Lua script reads them and counts the request
only if the address is not locked out. The windows are
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
from redis.commands.core import Script

from glowing_fiesta import bruteforce, failopen, monitoring
from glowing_fiesta.exceptions import TooManyRequests

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


def _window_key(counter_id: str, *, now: int) -> tuple[str, int]:
    """The Redis key of the counter's current window, and when the window ends."""
    end = window_end(counter_id, now=now)
    prefix = getattr(settings, "RATELIMIT_CACHE_PREFIX", "rl:")
    return caches["default"].make_key(f"{prefix}{GROUP}:{counter_id}:{end}"), end


def _count(counter_id: str, *, now: int) -> tuple[int, int]:
    """Add one to the counter's current window; return (count, seconds left in the window)."""
    key, end = _window_key(counter_id, now=now)
    pipe = get_redis_connection("default").pipeline(transaction=True)
    pipe.set(key, 0, ex=end - now + 1, nx=True)  # a second's grace, as django-ratelimit has
    pipe.incr(key)
    _, count = pipe.execute()
    return int(count), end - now


# KEYS: the address's failures counter, the key's window counter; ARGV: the failures limit, the
# window counter's lifetime. Returns -1 (nothing counted) for an address over the limit.
_COUNT_UNLESS_LOCKED_OUT = """
local failures = tonumber(redis.call('GET', KEYS[1]) or '0')
if failures >= tonumber(ARGV[1]) then return -1 end
redis.call('SET', KEYS[2], 0, 'EX', ARGV[2], 'NX')
return redis.call('INCR', KEYS[2])
"""
_script: Script | None = None  # sent by its SHA1 (EVALSHA), loaded on first use by a server


def _count_unless_locked_out(
    counter_id: str, *, now: int, failures_key: str, failures_limit: int
) -> tuple[int, int]:
    """`_count` in one script that first reads the address's failures: (-1, _) when locked out."""
    global _script
    key, end = _window_key(counter_id, now=now)
    client = get_redis_connection("default")
    if _script is None:
        _script = client.register_script(_COUNT_UNLESS_LOCKED_OUT)
    count = _script(keys=[failures_key, key], args=[failures_limit, end - now + 1], client=client)
    return int(count), end - now


def ratelimit_hit(
    *, request: HttpRequest, key: ApiKey, check_failures: bool = False
) -> RateUsage | None:
    """Count one request against `key`; None when Redis is unavailable (served uncounted).

    With `check_failures` the address's failed authentications are read in the same round trip,
    and an address over AUTH_FAILURE_RATE gets the 429 of glowing_fiesta.bruteforce, uncounted.
    """
    now = int(time.time())
    counter_id = _counter_id(key)
    if check_failures:
        failures_key, failures_limit, seconds_left = bruteforce.failures_window(request)
        counted = failopen.call(
            "ratelimit",
            lambda: _count_unless_locked_out(
                counter_id, now=now, failures_key=failures_key, failures_limit=failures_limit
            ),
            None,
        )
        if counted is not None and counted[0] < 0:
            bruteforce.auth_failures_refuse(request, seconds_left=seconds_left)
    else:
        counted = failopen.call("ratelimit", lambda: _count(counter_id, now=now), None)
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


def ratelimit_enforce(
    *, request: HttpRequest, key: ApiKey, check_failures: bool = False
) -> RateUsage | None:
    """Count the request; raise TooManyRequests (429 with Retry-After) when over the limit
    (or, with `check_failures`, when the address is over its failed authentications)."""
    usage = ratelimit_hit(request=request, key=key, check_failures=check_failures)
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
