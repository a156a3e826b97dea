"""The one request parser: strict JSON with a size cap, never a 500 on hostile input."""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import BaseParser

from .exceptions import PayloadTooLarge


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


class StrictJSONParser(BaseParser):
    """JSON only; at most DATA_UPLOAD_MAX_MEMORY_SIZE bytes (413); NaN/Infinity and absurd
    nesting are a 400 (Python's decoder would raise RecursionError, a 500, on deep nesting).

    DRF reads the body from the request stream, which bypasses Django's own size check, so the
    cap is enforced here: by Content-Length up front and by the bytes actually read.
    """

    media_type = "application/json"

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        request = (parser_context or {}).get("request")
        declared = request.META.get("CONTENT_LENGTH") if request is not None else None
        too_large = PayloadTooLarge(
            f"The request body is larger than the {limit // 1024} KiB limit."
        )
        if declared and declared.isdigit() and int(declared) > limit:
            raise too_large
        raw = stream.read(limit + 1)
        if len(raw) > limit:
            raise too_large
        try:
            text = raw.decode("utf-8")
            return json.loads(text, parse_constant=_reject_constant)
        except RecursionError:
            raise ParseError("JSON parse error: nested too deeply.") from None
        except (UnicodeDecodeError, ValueError) as exc:
            raise ParseError(f"JSON parse error: {exc}") from None
