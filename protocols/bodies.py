"""Request bodies of the protocol endpoints: one reader for all of them.

These bodies are far larger than the JSON endpoints' 512 KiB (an OTLP export may be megabytes),
so they are read from the request stream here rather than through Django's `request.body`,
which is capped by DATA_UPLOAD_MAX_MEMORY_SIZE. A gzip or deflate body is inflated as it streams
in, a piece at a time, and abandoned as soon as it passes the cap: a small "zip bomb" never
costs more memory than the cap itself.

`request_body` is what the views call: the chunked rule, the cap, the inflation, and the one
mapping of what can go wrong to a Problem (413, 400, 415, 411). Each protocol's view renders
that Problem in its own error shape (InfluxDB JSON, google.rpc.Status, problem+json).
"""

from __future__ import annotations

import zlib
from collections.abc import Collection
from typing import Any, BinaryIO

from rest_framework.exceptions import UnsupportedMediaType

from glowing_fiesta.exceptions import InvalidInput, LengthRequired, PayloadTooLarge

CHUNK = 256 * 1024
# The Content-Encodings an endpoint may inflate, by their wbits for zlib.
_WBITS = {
    "gzip": 16 + zlib.MAX_WBITS,
    "x-gzip": 16 + zlib.MAX_WBITS,
    "deflate": 32 + zlib.MAX_WBITS,  # zlib-wrapped, as HTTP means it; the header is detected
}
GZIP_OR_DEFLATE = frozenset(_WBITS)
GZIP = frozenset({"gzip", "x-gzip"})


class BodyTooLarge(ValueError):
    """The body, read or inflated, is larger than the cap (413)."""


class BodyMalformed(ValueError):
    """The body does not decode as its Content-Encoding says (400)."""


class EncodingUnsupported(ValueError):
    """A Content-Encoding this endpoint does not take (415)."""


def request_stream(request: Any) -> BinaryIO:
    """The stream to read the body from, a chunked one included.

    Django reads a body only up to its Content-Length, so a chunked request (no length) would
    look empty and its points would be lost without a word; gunicorn de-chunks the body and says
    so with `wsgi.input_terminated`, so it is read from the WSGI input to its end instead. A
    server that does not say so cannot be read safely: 411.
    """
    meta = request.META
    chunked = "chunked" in meta.get("HTTP_TRANSFER_ENCODING", "").lower()
    if chunked and not meta.get("CONTENT_LENGTH"):
        if not meta.get("wsgi.input_terminated"):
            raise LengthRequired(
                "Send the body with a Content-Length; this server cannot read it chunked."
            )
        return meta["wsgi.input"]
    return request.stream


def request_body(
    request: Any, *, limit: int, encodings: Collection[str] | None = GZIP_OR_DEFLATE
) -> bytes:
    """The request's body, at most `limit` bytes once inflated per its Content-Encoding (one of
    `encodings`; None: the body as sent, its encoding left to the caller).

    Every failure is raised as the Problem of its status: 413 too large, 400 malformed, 415 an
    encoding not taken, 411 a chunked body that cannot be read; `BodyIncomplete` (400, a body
    that ended before its Content-Length), raised by the request stream, passes through as is.
    """
    header = request.headers.get("Content-Encoding", "") if encodings is not None else ""
    try:
        return body_read(
            request_stream(request),
            content_length=request.META.get("CONTENT_LENGTH"),
            limit=limit,
            encoding=header,
            encodings=encodings or (),
        )
    except BodyTooLarge as exc:
        raise PayloadTooLarge(f"The request body is too large: {exc}.") from None
    except EncodingUnsupported as exc:
        raise UnsupportedMediaType(header, detail=str(exc)) from None
    except BodyMalformed as exc:
        raise InvalidInput(f"The request body cannot be read: {exc}.") from None


def body_read(
    stream: BinaryIO | None,
    *,
    content_length: str | None,
    limit: int,
    encoding: str = "",
    encodings: Collection[str] = GZIP_OR_DEFLATE,
) -> bytes:
    """At most `limit` bytes from `stream`, inflated per `encoding` (identity or one of
    `encodings`); BodyTooLarge past the cap, before reading when the Content-Length says so.

    Concatenated gzip members are read as one body (RFC 1952 2.2), as InfluxDB reads them.
    """
    encoding = encoding.strip().lower()
    if encoding not in {"", "identity"} and encoding not in encodings:
        accepted = ", ".join(sorted(e for e in encodings if e != "x-gzip"))
        raise EncodingUnsupported(
            f"Content-Encoding {encoding[:40]!r} is not supported: send {accepted or 'none'}"
            + (" or none" if accepted else "")
        )
    try:
        declared = int(content_length or 0)
    except ValueError:
        declared = 0
    if declared > limit:
        raise BodyTooLarge(f"the body of {declared} bytes is larger than the {limit}-byte limit")
    if stream is None:
        return b""
    wbits = _WBITS.get(encoding)
    inflater = zlib.decompressobj(wbits) if wbits else None
    parts: list[bytes] = []
    read = size = 0
    while True:
        chunk = stream.read(CHUNK if inflater else min(CHUNK, limit + 1 - read))
        if not chunk:
            break
        read += len(chunk)
        if read > limit:
            raise BodyTooLarge(f"the body is larger than the {limit}-byte limit")
        if inflater is None:
            parts.append(chunk)
            continue
        data = chunk
        try:
            while data:
                if inflater.eof:
                    if wbits != _WBITS["deflate"]:
                        inflater = zlib.decompressobj(wbits)  # another gzip member follows
                    else:
                        break  # one deflate stream; what follows it is ignored
                piece = inflater.decompress(data, min(CHUNK, limit + 1 - size))
                size += len(piece)
                if size > limit:
                    raise BodyTooLarge(f"the inflated body is larger than the {limit}-byte limit")
                parts.append(piece)
                data = inflater.unconsumed_tail or (inflater.unused_data if inflater.eof else b"")
        except zlib.error as exc:
            raise BodyMalformed(f"the body is not valid {encoding}: {exc}") from None
    if inflater is not None and read and not inflater.eof:
        raise BodyMalformed(f"the {encoding} body is truncated")
    return b"".join(parts)
