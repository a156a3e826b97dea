"""Request duration by method, URL pattern name and status, for every request."""

from __future__ import annotations

import time
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from .record import request_observe

UNMATCHED = "unmatched"


def route_of(request: HttpRequest) -> str:
    """The name of the URL pattern that served the request ("admin:index", "metric-query");
    "unmatched" for every path no pattern matched, so the label never holds a raw path."""
    match = getattr(request, "resolver_match", None)
    if match is None:
        return UNMATCHED
    return match.view_name or match.route or UNMATCHED


class RequestMetricsMiddleware:
    """Times each request around everything after it (authentication, the view, rendering)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        response = self.get_response(request)
        request_observe(
            method=request.method or "",
            route=route_of(request),
            status=response.status_code,
            seconds=time.perf_counter() - started,
        )
        return response
