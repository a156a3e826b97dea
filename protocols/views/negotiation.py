"""What the protocol endpoints' views share: a content negotiation that ignores Accept, and
the request body's stream."""

from __future__ import annotations

from typing import Any

from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.renderers import JSONRenderer

from glowing_fiesta.exceptions import Problem


class IgnoreAccept(BaseContentNegotiation):
    """The answer's format is the protocol's, whatever Accept says: exporters that send
    `Accept: application/x-protobuf` must not get 406 from DRF's negotiation."""

    def select_parser(self, request: Any, parsers: list) -> Any:
        return parsers[0] if parsers else None

    def select_renderer(self, request: Any, renderers: list, format_suffix: Any = None) -> Any:
        renderer = renderers[0] if renderers else JSONRenderer()
        return renderer, renderer.media_type


def body_stream(request: Any) -> Any:
    """The stream to read the body from, a chunked one included.

    Django reads a body only up to its Content-Length, so a chunked request (no length) would
    look empty and its points would be lost without a word; gunicorn de-chunks the body and says
    so with `wsgi.input_terminated`, so it is read from the WSGI input to its end instead.
    """
    meta = request.META
    chunked = "chunked" in meta.get("HTTP_TRANSFER_ENCODING", "").lower()
    if chunked and not meta.get("CONTENT_LENGTH"):
        if not meta.get("wsgi.input_terminated"):
            raise LengthRequired()
        return meta["wsgi.input"]
    return request.stream


class LengthRequired(Problem):
    status = 411
    slug = "length-required"
    title = "Length required"

    def __init__(self) -> None:
        super().__init__("Send the body with a Content-Length; this server cannot read it chunked.")
