"""Failed authentications per client address: wrong API keys and failed admin logins.

Each failure is one atomic INCR in Redis (django-ratelimit, a fixed window of AUTH_FAILURE_RATE's
period). Once an address has failed AUTH_FAILURE_RATE times in its window, every attempt from it
gets 429 with Retry-After until the window ends, before any key is looked up or any password
hashed: guessing costs the guesser, not the database. Like the per-key limit, an unreachable
Redis counts nothing rather than refusing everyone.
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.contrib import admin
from django.contrib.auth.signals import user_login_failed
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse
from django.views.decorators.cache import never_cache
from django_ratelimit.core import get_usage

from apikeys import cache

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


def _usage(request: HttpRequest, *, increment: bool) -> dict[str, Any] | None:
    address = client_address(request)
    usage = cache.call(
        "auth failures",
        lambda: get_usage(
            request,
            group=GROUP,
            key=lambda _group, _request: address,
            rate=settings.AUTH_FAILURE_RATE,
            increment=increment,
        ),
        None,
    )
    # django-ratelimit reports a failed count as a limit of 0: Redis is unavailable.
    if usage is None or usage["limit"] == 0:
        return None
    return usage


def auth_failures_check(request: HttpRequest) -> None:
    """Raise TooManyRequests (429, Retry-After) when the client's address is over the limit."""
    usage = _usage(request, increment=False)
    if usage is None or usage["count"] < usage["limit"]:
        return
    retry_after = max(usage["time_left"], 1)
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
    _usage(request, increment=True)


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
