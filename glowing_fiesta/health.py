"""Liveness and readiness probes: no authentication, no rate limit."""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import wraps

from django.core.cache import cache
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from .exceptions import PROBLEM_CONTENT_TYPE, method_not_allowed, problem_body

logger = logging.getLogger(__name__)

_ALLOWED = ["GET", "HEAD"]


def _probe(view: Callable[[HttpRequest], JsonResponse]) -> Callable[[HttpRequest], JsonResponse]:
    """GET and HEAD only, with a 405 problem for anything else. CSRF-exempt: the probes change
    nothing, and without the exemption a POST would get the CSRF failure instead of its 405."""

    @csrf_exempt
    @wraps(view)
    def probe(request: HttpRequest) -> JsonResponse:
        if request.method not in _ALLOWED:
            return method_not_allowed(request, _ALLOWED)
        return view(request)

    return probe


@_probe
def healthz(request: HttpRequest) -> JsonResponse:
    """The process answers; touches nothing else."""
    return JsonResponse({"status": "ok"})


def _check_database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def _check_redis() -> None:
    cache.client.get_client(write=True).ping()


@_probe
def readyz(request: HttpRequest) -> JsonResponse:
    """Ready when PostgreSQL and Redis both answer; otherwise 503 naming what is down."""
    down = []
    for name, check in (("postgresql", _check_database), ("redis", _check_redis)):
        try:
            check()
        except Exception:
            logger.warning("readiness check failed", extra={"dependency": name}, exc_info=True)
            down.append(name)
    if down:
        body = problem_body(
            503,
            "not-ready",
            "Service unavailable",
            f"Unreachable: {', '.join(down)}.",
            errors=[{"field": name, "message": "unreachable"} for name in down],
        )
        return JsonResponse(
            body, status=503, content_type=PROBLEM_CONTENT_TYPE, headers={"Retry-After": "5"}
        )
    return JsonResponse({"status": "ready", "checks": {"postgresql": "ok", "redis": "ok"}})
