"""Per-key request rate limits: a fixed one-minute window per key, counted in Redis.

django-ratelimit does the counting (one atomic INCR per request). Its windows are staggered per
key, so clients do not all reset at the same second. When Redis cannot be reached the request is
served uncounted: an outage of the cache must not become an outage of the API.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from django.http import HttpRequest
from django_ratelimit.core import get_usage

from glowing_fiesta import monitoring
from glowing_fiesta.exceptions import TooManyRequests

from . import cache
from .models import ApiKey

logger = logging.getLogger(__name__)

GROUP = "apikeys.requests"


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


def ratelimit_hit(*, request: HttpRequest, key: ApiKey) -> RateUsage | None:
    """Count one request against `key`; None when Redis is unavailable (served uncounted)."""
    counter_id = _counter_id(key)
    usage = cache.call(
        "ratelimit",
        lambda: get_usage(
            request,
            group=GROUP,
            key=lambda _group, _request: counter_id,
            rate=f"{key.rate_limit}/m",
            increment=True,
        ),
        None,
    )
    # django-ratelimit reports a failed count as a limit of 0; that is an unavailable cache too.
    if usage is None or usage["limit"] == 0:
        return None
    now = int(time.time())
    time_left = max(usage["time_left"], 0)
    return RateUsage(
        limit=usage["limit"],
        remaining=max(usage["limit"] - usage["count"], 0),
        reset=now + time_left,
        retry_after=max(time_left, 1),
        exceeded=usage["should_limit"],
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
