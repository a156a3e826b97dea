"""Request-level guards that run before any view: HTTPS for the API, no caching of API answers,
and request bodies sent without a Content-Length.

Each one answers in problem+json, like every other error of the service.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Callable

from django.conf import settings
from django.core.handlers.wsgi import LimitedStream
from django.http import HttpRequest, HttpResponse
from django.urls import reverse

from .exceptions import HttpsRequired, LengthRequired, PayloadTooLarge, problem_http_response

Handler = Callable[[HttpRequest], HttpResponse]


def is_api_path(path: str) -> bool:
    """A path answered to API clients (keys, JSON), as opposed to browser pages and probes."""
    return path.startswith(settings.API_PATH_PREFIXES) and not path.startswith(
        settings.API_BROWSER_PATHS
    )


class HttpsRequiredMiddleware:
    """With SECURE_SSL_REDIRECT on, API calls over plain HTTP get 403 `https-required`.

    Redirecting would invite the client to send its key in the clear a second time; refusing
    tells its developer at once. Placed before authentication, so no key is looked up. The
    probes (/healthz, /readyz) and browser pages are left to SecurityMiddleware's redirect.
    """

    def __init__(self, get_response: Handler) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if settings.SECURE_SSL_REDIRECT and not request.is_secure() and is_api_path(request.path):
            return problem_http_response(
                HttpsRequired(
                    "This API is served over HTTPS only. The request was refused unread; if it "
                    "carried an API key, that key crossed the network in the clear: consider "
                    "revoking it."
                )
            )
        return self.get_response(request)


class ApiCacheControlMiddleware:
    """API answers (and the probes) carry `Cache-Control: no-store`: they may hold data of a
    key's owner, and no cache between client and service may keep them."""

    def __init__(self, get_response: Handler) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if is_api_path(request.path) or request.path in settings.HTTPS_EXEMPT_PATHS:
            response["Cache-Control"] = "no-store"
        return response


@functools.cache
def _self_reading() -> frozenset[str]:
    # The protocol endpoints (OTLP, remote write, InfluxDB) read their own, much larger, bodies
    # from the stream, chunked ones included, within their own caps.
    return frozenset(
        reverse(name)
        for name in ("otlp-metrics", "remote-write", "influx-v1-write", "influx-v2-write")
    )


class ChunkedBodyMiddleware:
    """Read a `Transfer-Encoding: chunked` body that has no Content-Length.

    Django sizes the body by Content-Length alone, so such a body would be read as empty and
    its request answered as if nothing had been sent. Where the server has decoded the chunks
    (gunicorn sets `wsgi.input_terminated`), the body is read here up to the upload limit (413
    past it) and given a length; where it has not, the request is refused with 411.
    """

    def __init__(self, get_response: Handler) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        meta = request.META
        chunked = "chunked" in meta.get("HTTP_TRANSFER_ENCODING", "").lower()
        if chunked and not meta.get("CONTENT_LENGTH") and request.path not in _self_reading():
            if not meta.get("wsgi.input_terminated"):
                return problem_http_response(
                    LengthRequired("Send the body with a Content-Length header.")
                )
            limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
            body = meta["wsgi.input"].read(limit + 1)
            if len(body) > limit:
                return problem_http_response(
                    PayloadTooLarge(
                        f"The request body is larger than the {limit // 1024} KiB limit."
                    )
                )
            meta["CONTENT_LENGTH"] = str(len(body))
            request._stream = LimitedStream(io.BytesIO(body), len(body))
        return self.get_response(request)
