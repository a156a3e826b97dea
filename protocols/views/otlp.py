"""POST /v1/metrics: OpenTelemetry OTLP/HTTP metrics, protobuf or JSON, optionally gzipped.

The answer is in the request's encoding: an `ExportMetricsServiceResponse` (with
`partial_success` when some data points were refused), or a `google.rpc.Status` for an error,
authentication and rate limiting included (`handle_exception`).
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
from glowing_fiesta.exceptions import InvalidInput
from glowing_fiesta.openapi import KEYED_ERRORS

from .. import otlp
from ..bodies import request_body
from ..intake import intake_store
from .negotiation import IgnoreAccept


def _encoding(request: Request) -> str | None:
    media_type = request.META.get("CONTENT_TYPE", "").split(";", 1)[0].strip().lower()
    if media_type == otlp.JSON:
        return otlp.JSON
    if media_type == otlp.PROTOBUF:
        return otlp.PROTOBUF
    return None


class OtlpMetricsView(ApiKeyView):
    """OTLP/HTTP metrics export (scope write); see protocols/otlp.py for the mapping."""

    required_scope = "write"
    content_negotiation_class = IgnoreAccept

    @extend_schema(
        summary="OpenTelemetry OTLP/HTTP metrics export",
        description=(
            "An `ExportMetricsServiceRequest` as `application/x-protobuf` or `application/json`"
            " (optionally `Content-Encoding: gzip`), at most OTLP_MAX_BODY_BYTES decompressed."
            " Cumulative sums become exact increments. Answers in the request's encoding."
        ),
        request=None,
        responses={
            200: OpenApiResponse(
                description="ExportMetricsServiceResponse; partial_success counts refused points"
            ),
            400: OpenApiResponse(description="Malformed body: google.rpc.Status"),
            413: OpenApiResponse(description="Body larger than the cap"),
            415: OpenApiResponse(description="Neither protobuf nor JSON, or unknown encoding"),
            429: OpenApiResponse(description="Rate limit exhausted (Retry-After)"),
            **{k: v for k, v in KEYED_ERRORS.items() if k[0] != 429},
        },
    )
    def post(self, request: Request) -> HttpResponse:
        encoding = _encoding(request)
        if encoding is None:
            raise UnsupportedMediaType(
                request.META.get("CONTENT_TYPE", ""),
                detail="Send application/x-protobuf or application/json.",
            )
        body = request_body(request, limit=settings.OTLP_MAX_BODY_BYTES)
        try:
            export = otlp.request_parse(body, encoding=encoding)
        except otlp.Malformed as exc:
            raise InvalidInput(f"The request body cannot be read: {exc}.") from None
        stored = intake_store(
            intake=otlp.request_intake(export, now=timezone.now()),
            allowed=namespace_checker(request.auth.namespaces),
        )
        return HttpResponse(otlp.response_body(stored, encoding=encoding), content_type=encoding)

    def handle_exception(self, exc: Exception) -> HttpResponse:
        # Every error, from authentication and rate limiting on, as a google.rpc.Status in the
        # request's encoding (protobuf when it is neither), keeping the status and headers
        # (Retry-After, WWW-Authenticate) the problem+json answer would have had.
        problem = super().handle_exception(exc)
        encoding = _encoding(self.request) or otlp.PROTOBUF
        data = getattr(problem, "data", None) or {}
        message = str(data.get("detail") or data.get("title") or "")
        response = HttpResponse(
            otlp.status_body(problem.status_code, message, encoding=encoding),
            status=problem.status_code,
            content_type=encoding,
        )
        for header, value in problem.items():
            if header.lower() != "content-type":
                response[header] = value
        return response
