"""The protocol endpoints' content negotiation: the answer is in the protocol's format."""

from __future__ import annotations

from typing import Any

from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.renderers import JSONRenderer


class IgnoreAccept(BaseContentNegotiation):
    """The answer's format is the protocol's, whatever Accept says: exporters that send
    `Accept: application/x-protobuf` must not get 406 from DRF's negotiation."""

    def select_parser(self, request: Any, parsers: list) -> Any:
        return parsers[0] if parsers else None

    def select_renderer(self, request: Any, renderers: list, format_suffix: Any = None) -> Any:
        renderer = renderers[0] if renderers else JSONRenderer()
        return renderer, renderer.media_type
