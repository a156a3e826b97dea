"""The one request parser: strict JSON with a size cap, never a 500 on hostile input."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from rest_framework.exceptions import ParseError, UnsupportedMediaType
from rest_framework.parsers import BaseParser

from .exceptions import PayloadTooLarge


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


@dataclass(frozen=True)
class TypedBody:
    """A body a view's `typed_decode` read into its own records (`value`), with the bytes it came
    from: `plain()` is what the generic decoder makes of them, for whoever needs plain data (the
    idempotency fingerprint)."""

    raw: bytes
    value: Any

    def plain(self) -> Any:
        return json.loads(self.raw)


class StrictJSONParser(BaseParser):
    """JSON only; at most DATA_UPLOAD_MAX_MEMORY_SIZE bytes (413); NaN/Infinity and absurd
    nesting are a 400 (Python's decoder would raise RecursionError, a 500, on deep nesting).

    The body is taken as sent: any Content-Encoding but `identity` is a 415 naming it, before a
    byte is read. Decoding gzip would buy little for bodies of at most 512 KiB, and taking a
    `br` body as plain JSON (what ignoring the header did) stores whatever the bytes happen to
    say.

    DRF reads the body from the request stream, which bypasses Django's own size check, so the
    cap is enforced here: by Content-Length up front and by the bytes actually read.
    """

    media_type = "application/json"
    # A faster decoder for one view's usual bodies: bytes -> records, or None for anything it
    # does not take, which then goes through the generic decoder and its error messages.
    typed_decode: Callable[[bytes], Any] | None = None

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        request = (parser_context or {}).get("request")
        declared = request.META.get("CONTENT_LENGTH") if request is not None else None
        encoding = request.META.get("HTTP_CONTENT_ENCODING", "") if request is not None else ""
        if encoding.strip().lower() not in ("", "identity"):
            raise UnsupportedMediaType(
                encoding,
                detail=f"Content-Encoding {encoding.strip()[:40]!r} is not accepted here: send "
                "the JSON body unencoded (no Content-Encoding, or identity).",
            )
        too_large = PayloadTooLarge(
            f"The request body is larger than the {limit // 1024} KiB limit."
        )
        if declared and declared.isdigit() and int(declared) > limit:
            raise too_large
        raw = stream.read(limit + 1)
        if len(raw) > limit:
            raise too_large
        if self.typed_decode is not None:
            value = self.typed_decode(raw)
            if value is not None:
                return TypedBody(raw, value)
        try:
            text = raw.decode("utf-8")
            return json.loads(text, parse_constant=_reject_constant)
        except RecursionError:
            raise ParseError("JSON parse error: nested too deeply.") from None
        except (UnicodeDecodeError, ValueError) as exc:
            raise ParseError(f"JSON parse error: {exc}") from None
