"""Request bodies of the protocol endpoints: read within a cap, inflated in bounded steps.

These bodies are far larger than the JSON endpoints' 512 KiB (an OTLP export may be megabytes),
so they are read from the request stream here rather than through Django's `request.body`,
which is capped by DATA_UPLOAD_MAX_MEMORY_SIZE. A gzip or deflate body is inflated a piece at a
time and abandoned as soon as it passes the cap: a small "zip bomb" never costs more memory
than the cap itself.
"""

from __future__ import annotations

import zlib
from typing import BinaryIO

CHUNK = 256 * 1024


class BodyTooLarge(ValueError):
    """The body, read or inflated, is larger than the cap (413)."""


class BodyMalformed(ValueError):
    """The body does not decode as its Content-Encoding says (400)."""


class EncodingUnsupported(ValueError):
    """A Content-Encoding this endpoint does not take (415)."""


def body_read(stream: BinaryIO | None, *, content_length: str | None, limit: int) -> bytes:
    """At most `limit` bytes from `stream`; BodyTooLarge past it (before reading, when the
    Content-Length says so)."""
    if stream is None:
        return b""
    try:
        declared = int(content_length or 0)
    except ValueError:
        declared = 0
    if declared > limit:
        raise BodyTooLarge(f"the body of {declared} bytes is larger than the {limit}-byte limit")
    parts: list[bytes] = []
    size = 0
    while True:
        part = stream.read(min(CHUNK, limit + 1 - size))
        if not part:
            break
        parts.append(part)
        size += len(part)
        if size > limit:
            raise BodyTooLarge(f"the body is larger than the {limit}-byte limit")
    return b"".join(parts)


def body_inflate(body: bytes, *, encoding: str, limit: int) -> bytes:
    """`body` decoded per its Content-Encoding (identity, gzip or deflate), at most `limit` bytes."""
    encoding = encoding.strip().lower()
    if encoding in {"", "identity"}:
        return body
    if encoding in {"gzip", "x-gzip"}:
        wbits = 16 + zlib.MAX_WBITS
    elif encoding == "deflate":
        wbits = 32 + zlib.MAX_WBITS  # zlib-wrapped, as HTTP means it; the header is detected
    else:
        raise EncodingUnsupported(
            f"Content-Encoding {encoding[:40]!r} is not supported: send gzip, deflate or none"
        )
    out: list[bytes] = []
    size = 0
    pending = body
    try:
        # A gzip body may be several members one after the other (RFC 1952 2.2).
        while pending:
            inflater = zlib.decompressobj(wbits)
            data = pending
            while not inflater.eof:
                piece = inflater.decompress(data, limit + 1 - size)
                size += len(piece)
                if size > limit:
                    raise BodyTooLarge(f"the inflated body is larger than the {limit}-byte limit")
                out.append(piece)
                data = inflater.unconsumed_tail
                if not piece and not data:
                    break  # input exhausted before the end of the stream
            if not inflater.eof:
                raise BodyMalformed(f"the {encoding} body is truncated")
            pending = inflater.unused_data if wbits != 32 + zlib.MAX_WBITS else b""
    except zlib.error as exc:
        raise BodyMalformed(f"the body is not valid {encoding}: {exc}") from None
    return b"".join(out)
