"""Failed authentications per client address: wrong API keys and failed admin logins.

Each failure is one atomic INCR in Redis (django-ratelimit, a fixed window of AUTH_FAILURE_RATE's
period); the check every authenticated request makes reads the same counter with one GET, or,
when the process holds the key's row (no lookup to guard), inside the per-key rate limit's one
script (apikeys/ratelimit.py). Once an address has failed AUTH_FAILURE_RATE times in its window,
every attempt from it gets 429 with Retry-After until the window ends, before any key is looked
up in the database, counted or marked used, or any password hashed: guessing costs the guesser,
not the database. Like the per-key limit, an unreachable
Redis counts nothing rather than refusing everyone.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from django.conf import settings
from django.contrib import admin
from django.contrib.auth.signals import user_login_failed
from django.core.cache import caches
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse
from django.views.decorators.cache import never_cache
from django_ratelimit.core import ALL, _get_window, _make_cache_key, _split_rate, get_usage
from django_redis import get_redis_connection

from . import failopen
from .exceptions import TooManyRequests, problem_http_response

logger = logging.getLogger(__name__)

GROUP = "auth.failures"


def client_address(request: HttpRequest) -> str:
    """REMOTE_ADDR, or with TRUSTED_PROXY_COUNT = n the n-th X-Forwarded-For entry from the right.

    Each trusted proxy appends the address it received the connection from, so the right-most n
    entries were written by our own proxies and the n-th is the client as the outermost one saw
    it. Entries further left were written by the client and could say anything.
    """
    remote = request.META.get("REMOTE_ADDR", "")
    count = settings.TRUSTED_PROXY_COUNT
    if not count:
        return remote
    forwarded = [part.strip() for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")]
    forwarded = [part for part in forwarded if part]
    if len(forwarded) < count:
        # Fewer entries than proxies: the chain is not what the setting says; the nearest
        # address we can trust is the connection's own.
        return remote
    return forwarded[-count]


def failures_window(request: HttpRequest) -> tuple[str, int, int]:
    """The Redis key of the address's failures in the current window (django-ratelimit's own,
    so it is exactly what auth_failure_record counts), the limit, and the seconds left."""
    address = client_address(request)
    rate = settings.AUTH_FAILURE_RATE
    limit, period = _split_rate(rate)
    window = _get_window(address, period)
    key = caches["default"].make_key(_make_cache_key(GROUP, window, rate, address, ALL))
    return key, limit, window - int(time.time())


def _failures(request: HttpRequest) -> tuple[int, int, int] | None:
    """(failures, limit, seconds left) in the address's current window, with one GET.

    get_usage without incrementing costs two round trips (an ADD of a zero, then a GET).
    """
    key, limit, seconds_left = failures_window(request)
    count = failopen.call(
        "auth failures", lambda: get_redis_connection("default").get(key) or 0, None
    )
    if count is None:
        return None
    return int(count), limit, seconds_left


def auth_failures_check(request: HttpRequest) -> None:
    """Raise TooManyRequests (429, Retry-After) when the client's address is over the limit."""
    failures = _failures(request)
    if failures is None or failures[0] < failures[1]:
        return
    auth_failures_refuse(request, seconds_left=failures[2])


def auth_failures_refuse(request: HttpRequest, *, seconds_left: int) -> None:
    """Raise the 429 of an address over the limit, with Retry-After the window's end."""
    retry_after = max(seconds_left, 1)
    logger.warning(
        "authentication failures limit reached",
        extra={"client": client_address(request), "limit": settings.AUTH_FAILURE_RATE},
    )
    raise TooManyRequests(
        f"Too many failed authentications from this address; retry in {retry_after} s.",
        headers={"Retry-After": str(retry_after)},
    )


def auth_failure_record(request: HttpRequest) -> None:
    """Count one failed authentication against the client's address."""
    address = client_address(request)
    failopen.call(
        "auth failures",
        lambda: get_usage(
            request,
            group=GROUP,
            key=lambda _group, _request: address,
            rate=settings.AUTH_FAILURE_RATE,
            increment=True,
        ),
        None,
    )


@receiver(user_login_failed, dispatch_uid="glowing_fiesta.bruteforce.login_failed")
def _login_failed(sender: Any, credentials: dict, request: HttpRequest | None = None, **_: Any):
    if request is not None:
        auth_failure_record(request)


@never_cache
def admin_login(request: HttpRequest, **kwargs: Any) -> HttpResponse:
    """The admin's login view, refused with 429 for an address over the failure limit."""
    if request.method == "POST":
        try:
            auth_failures_check(request)
        except TooManyRequests as exc:
            return problem_http_response(exc)
    return admin.site.login(request, **kwargs)
