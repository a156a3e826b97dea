"""POST /api/v1/write: Prometheus remote write 1.0 (snappy-compressed protobuf WriteRequest).

204 when every sample was stored; otherwise 400 naming what was refused, after storing the
rest. Bad input is never a 5xx: Prometheus retries those for ever, and gives up on a 4xx.
"""

from __future__ import annotations

from django.conf import settings
from django.http import HttpResponse
from django.utils import timezone
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework.exceptions import UnsupportedMediaType
from rest_framework.request import Request

from apikeys.base import ApiKeyView
from apikeys.namespaces import namespace_checker
from glowing_fiesta.exceptions import InvalidInput, PayloadTooLarge
from glowing_fiesta.openapi import KEYED_ERRORS

from .. import remote_write
from ..bodies import request_body
from ..intake import intake_store
from .negotiation import IgnoreAccept

PROTOBUF = "application/x-protobuf"
# The one message remote write 1.0 sends; 2.0's is `io.prometheus.write.v2.Request`.
WRITE_REQUEST = "prometheus.WriteRequest"


def headers_check(request: Request) -> None:
    """Remote write 1.0 senders MUST send `Content-Type: application/x-protobuf` and
    `Content-Encoding: snappy`: a request without either, or with another, is refused (415,
    naming the header) rather than guessed at. `proto=prometheus.WriteRequest` may be added to
    the type, as 2.0-aware senders do; another `proto` (remote write 2.0) is refused."""
    content_type = request.META.get("CONTENT_TYPE", "")
    media_type, *parameters = (part.strip() for part in content_type.split(";"))
    proto = next(
        (
            value.strip('"')
            for key, _, value in (p.partition("=") for p in parameters)
            if key.strip().lower() == "proto"
        ),
        WRITE_REQUEST,
    )
    if media_type.lower() != PROTOBUF or proto != WRITE_REQUEST:
        raise UnsupportedMediaType(
            content_type,
            detail=(
                f"{_given('Content-Type', content_type)}: send Content-Type:"
                f" {PROTOBUF} (a remote write 1.0 {WRITE_REQUEST}; remote write 2.0 is not"
                " supported)."
            ),
        )
    encoding = request.headers.get("Content-Encoding", "")
    if encoding.strip().lower() != "snappy":
        raise UnsupportedMediaType(
            encoding,
            detail=(
                f"{_given('Content-Encoding', encoding)}: send the body"
                " snappy-compressed (block format) with Content-Encoding: snappy."
            ),
        )


def _given(header: str, value: str) -> str:
    return f"{header} {value[:80]!r} is not taken" if value else f"{header} is missing"


class RemoteWriteView(ApiKeyView):
    """Prometheus remote write 1.0 (scope write); see protocols/remote_write.py."""

    required_scope = "write"
    content_negotiation_class = IgnoreAccept

    @extend_schema(
        summary="Prometheus remote write 1.0",
        description=(
            "A snappy-compressed (block format) protobuf `WriteRequest`, sent with"
            " `Content-Type: application/x-protobuf` and `Content-Encoding: snappy`, at most"
            " REMOTE_WRITE_MAX_BODY_BYTES decompressed. Series named *_total, *_count, *_sum"
            " or *_bucket are cumulative counters, stored as their increases."
        ),
        request=None,
        responses={
            204: OpenApiResponse(description="Every sample stored"),
            400: OpenApiResponse(description="Malformed body, or samples refused (others stored)"),
            413: OpenApiResponse(description="Body larger than the cap"),
            415: OpenApiResponse(
                description="Content-Type not application/x-protobuf, Content-Encoding not"
                " snappy (either missing), or remote write 2.0"
            ),
            429: OpenApiResponse(description="Rate limit exhausted (Retry-After)"),
            **{k: v for k, v in KEYED_ERRORS.items() if k[0] != 429},
        },
    )
    def post(self, request: Request) -> HttpResponse:
        headers_check(request)
        limit = settings.REMOTE_WRITE_MAX_BODY_BYTES
        raw = request_body(request, limit=limit, encodings=None)  # snappy, decoded by the parser
        try:
            write = remote_write.request_parse(raw, limit=limit)
        except remote_write.TooLarge as exc:
            raise PayloadTooLarge(f"The request body is too large: {exc}.") from None
        except remote_write.Malformed as exc:
            raise InvalidInput(f"The request body cannot be read: {exc}.") from None
        stored = intake_store(
            intake=remote_write.request_intake(write, now=timezone.now()),
            allowed=namespace_checker(request.auth.namespaces),
        )
        if stored.refused:
            raise InvalidInput(
                f"{stored.points} points stored; {stored.refused} series had samples refused: "
                f"{stored.message}",
                extra={"stored": stored.points, "refused_series": stored.refused},
            )
        return HttpResponse(status=204)
