"""Request-level guards that run before any view: HTTPS for the API, no caching of API answers,
request bodies cut off before their end, and request bodies sent without a Content-Length.

Each one answers in problem+json, like every other error of the service.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.handlers.wsgi import LimitedStream
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from gunicorn.http.errors import ChunkMissingTerminator, ParseException

from .exceptions import (
    BodyIncomplete,
    HttpsRequired,
    LengthRequired,
    PayloadTooLarge,
    Problem,
    problem_http_response,
)

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


class BodyStream:
    """A request body's WSGI input that ends where the body does, or not at all.

    Servers hand over what arrived before the connection closed: gunicorn's reader of a body of
    known length returns fewer bytes than its Content-Length at EOF, and every reader above it
    (Django's `request.body`, the protocols' capped reader) takes them for the whole body. Here
    each read returns everything it asks for within the declared length, or raises
    BodyIncomplete when the input ends before that; a chunked body that ends before its last
    chunk (gunicorn raises NoMoreData or ChunkMissingTerminator) raises it too. Every reader
    reads the whole body before parsing any of it, so nothing of a cut-off body is ever stored.
    `failure` keeps the refusal, for the middleware to make sure the client gets it.
    """

    def __init__(self, stream: Any, length: int | None) -> None:
        self._stream = stream
        self.length = length  # None: chunked, ended by the server
        self.received = 0
        self.failure: Problem | None = None

    def read(self, size: int | None = -1, /) -> bytes:
        return self._read(self._stream.read, size, line=False)

    def readline(self, size: int | None = -1, /) -> bytes:
        return self._read(self._stream.readline, size, line=True)

    def _read(self, read: Callable[[int], bytes], size: int | None, *, line: bool) -> bytes:
        """`size` bytes (all, if None or negative) through `read`, within the declared length
        (a `line` ends at its newline too); BodyIncomplete if the input ends first."""
        if self.length is None:
            data = self._call(read, -1 if size is None else size)
            self.received += len(data)
            return data
        remaining = self.length - self.received
        wanted = remaining if size is None or size < 0 else min(size, remaining)
        parts: list[bytes] = []
        got = 0
        # A stream may return less than asked before its end; only an empty read is the end.
        while got < wanted:
            part = self._call(read, wanted - got)
            if not part:
                self.received += got
                raise self._incomplete()
            parts.append(part)
            got += len(part)
            if line and part.endswith(b"\n"):
                break
        self.received += got
        return b"".join(parts)

    def _call(self, read: Callable[[int], bytes], size: int) -> bytes:
        try:
            return read(size)
        except (ChunkMissingTerminator, OSError):
            # OSError: gunicorn's NoMoreData (EOF inside a chunk), a reset, a read timeout.
            raise self._incomplete() from None
        except ParseException as exc:
            self.failure = Problem(f"The chunked body is malformed: {exc}.")
            raise self.failure from None

    def _incomplete(self) -> BodyIncomplete:
        if self.length is None:
            detail = (
                "The chunked body ended before its last (zero-size) chunk: the upload was cut "
                "off. Nothing was stored; send it again."
            )
        else:
            detail = (
                f"The body ended after {self.received} of the {self.length} bytes its "
                "Content-Length declared: the upload was cut off. Nothing was stored; send it "
                "again."
            )
        self.failure = BodyIncomplete(detail)
        return self.failure


class BodyCompleteMiddleware:
    """Every request that declares a body reads it through a BodyStream: a body shorter than its
    Content-Length, or a chunked one without its last chunk, is refused with 400
    `body-incomplete` before any of it is parsed, on every endpoint.

    The views answer the refusal themselves (the protocol endpoints in their own error shape);
    whatever read it elsewhere (a form in the admin, another middleware), the answer is the same
    400 in problem+json, never a 500 or an answer about the half that arrived.
    """

    def __init__(self, get_response: Handler) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        meta = request.META
        declared = meta.get("CONTENT_LENGTH") or ""
        stream: BodyStream | None = None
        if declared.isdigit() and int(declared) > 0:
            stream = BodyStream(meta["wsgi.input"], int(declared))
            # Django made its own stream over the server's input when the request was built.
            request._stream = LimitedStream(stream, int(declared))
        elif "chunked" in meta.get("HTTP_TRANSFER_ENCODING", "").lower() and meta.get(
            "wsgi.input_terminated"
        ):
            stream = BodyStream(meta["wsgi.input"], None)
        if stream is not None:
            meta["wsgi.input"] = stream
        response = self.get_response(request)
        if stream is not None and stream.failure is not None and response.status_code != 400:
            return problem_http_response(stream.failure)
        return response

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        """A view outside DRF that read a cut-off body: the 400, not a logged 500."""
        stream = request.META.get("wsgi.input")
        if isinstance(stream, BodyStream) and exception is stream.failure:
            return problem_http_response(stream.failure)
        return None


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
            try:
                body = meta["wsgi.input"].read(limit + 1)
            except Problem as exc:  # a BodyStream's: cut off or malformed
                return problem_http_response(exc)
            if len(body) > limit:
                return problem_http_response(
                    PayloadTooLarge(
                        f"The request body is larger than the {limit // 1024} KiB limit."
                    )
                )
            meta["CONTENT_LENGTH"] = str(len(body))
            request._stream = LimitedStream(io.BytesIO(body), len(body))
        return self.get_response(request)
