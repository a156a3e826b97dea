"""InfluxDB's write endpoints: `POST /api/v2/write` (InfluxDB 2) and `POST /write` (1.x).

Telegraf and the InfluxDB client libraries write here unchanged: line protocol in the body,
gzip or not, the key as `Authorization: Token <key>`. Every answer, errors included, is in
InfluxDB's shape (`{"code": ..., "message": ...}`) rather than problem+json, because those
clients read it: Telegraf drops a batch on 400 and 422, retries on 429 and 5xx, and halves it on
413. The wire format lives in `protocols.line_protocol` and `protocols.influx`.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.request import Request
from rest_framework.response import Response

from apikeys.base import ApiKeyView
from apikeys.namespaces import namespace_checker
from glowing_fiesta.exceptions import Problem, problem_exception_handler
from idempotency.services import Outcome, fingerprint, idempotent_run
from metrics.views.ingest import IDEMPOTENCY_PARAMETER

from .. import influx, line_protocol
from ..bodies import GZIP, request_body

logger = logging.getLogger(__name__)

# InfluxDB's error codes, by HTTP status.
CODES = {
    400: "invalid",
    401: "unauthorized",
    403: "forbidden",
    404: "not found",
    405: "method not allowed",
    409: "conflict",
    413: "request too large",
    415: "unsupported media type",
    422: "unprocessable entity",
    429: "too many requests",
    503: "unavailable",
}
# Problem headers that belong on an InfluxDB error too.
_KEPT_HEADERS = ("Retry-After", "WWW-Authenticate")


def influx_body(status: int, message: str, **extra: Any) -> dict[str, Any]:
    return {"code": CODES.get(status, "internal error"), "message": message, **extra}


def influx_exception_handler(exc: Exception, context: dict[str, Any]) -> Response:
    """Any error of these views as InfluxDB JSON; the status and headers of problem+json kept."""
    view = context.get("view")
    if isinstance(exc, Problem):
        body = influx_body(exc.status, exc.detail, **exc.extra)
        return _response(view, body, exc.status, exc.headers)
    problem = problem_exception_handler(exc, context)
    if problem is None:
        logger.exception("influx write failed")
        return _response(view, influx_body(500, "The server failed; it has been logged."), 500)
    message = problem.data.get("detail") or problem.data.get("title", "")
    headers = {name: problem[name] for name in _KEPT_HEADERS if problem.has_header(name)}
    return _response(view, influx_body(problem.status_code, message), problem.status_code, headers)


def _response(view: Any, body: dict[str, Any], status: int, headers: Any = None) -> Response:
    if getattr(view, "legacy_error_key", False):
        body = {**body, "error": body["message"]}  # InfluxDB 1.x clients read "error"
    return Response(body, status=status, headers=dict(headers or {}))


class InfluxQueryInvalid(Problem):
    status = 400
    slug = "invalid-parameter"
    title = "Invalid parameter"


def _outcome_response(outcome: Outcome, legacy: bool) -> Response:
    headers = {"Idempotent-Replayed": "true"} if outcome.replayed else {}
    if outcome.status == 204:
        return Response(status=204, headers=headers)
    body = dict(outcome.body)
    if "detail" in body:  # a saved problem document, from a refusal raised in the write
        body = influx_body(outcome.status, body["detail"])
    if legacy:
        body.setdefault("error", body.get("message", ""))
    return Response(body, status=outcome.status, headers=headers)


ERRORS = {
    204: OpenApiResponse(description="Every point stored"),
    400: OpenApiResponse(
        description='Malformed line: {"code": "invalid", "message", "line"}; nothing stored'
    ),
    401: OpenApiResponse(description="No valid API key"),
    403: OpenApiResponse(description="The key lacks the write scope"),
    413: OpenApiResponse(description="Body over INFLUX_MAX_BODY_BYTES, or over 10,000 points"),
    422: OpenApiResponse(
        description="Partial write: the points named were dropped, the others stored"
    ),
    429: OpenApiResponse(description="Rate limit exhausted (Retry-After)"),
    503: OpenApiResponse(description="Database unavailable (Retry-After)"),
}


class _JSONAlways(BaseContentNegotiation):
    """JSON whatever the Accept header says: InfluxDB answers JSON to every client."""

    def select_parser(self, request: Request, parsers: list) -> Any:
        return None  # the body is read raw, never through a parser

    def select_renderer(self, request: Request, renderers: list, format_suffix: Any = None) -> Any:
        return renderers[0], renderers[0].media_type


class _InfluxWriteView(ApiKeyView):
    required_scope = "write"
    content_negotiation_class = _JSONAlways
    precisions: tuple[str, ...]
    legacy_error_key = False

    def get_exception_handler(self) -> Callable[[Exception, dict[str, Any]], Response]:
        return influx_exception_handler

    def check_names(self, request: Request) -> None:
        raise NotImplementedError

    def write(self, request: Request) -> Response:
        """Check the query, read and parse the body, store once per Idempotency-Key, answer."""
        now = timezone.now()
        self.check_names(request)
        precision = request.query_params.get("precision") or "ns"
        if precision not in self.precisions:
            raise InfluxQueryInvalid(
                f"precision {precision[:20]!r} is not one of {', '.join(self.precisions)}."
            )
        body = request_body(request, limit=settings.INFLUX_MAX_BODY_BYTES, encodings=GZIP)
        lines = line_protocol.lines_parse(influx.body_text(body), precision=precision)
        if not lines:
            raise influx.NoPoints("writing requires points")

        def action() -> Outcome:
            result = influx.influx_write(
                lines=lines, now=now, allowed=namespace_checker(request.auth.namespaces)
            )
            if result.dropped:
                return Outcome(422, influx_body(422, result.message()))
            return Outcome(204, {})

        outcome = idempotent_run(
            api_key_id=request.auth.pk,
            key=request.headers.get("Idempotency-Key"),
            digest=lambda: fingerprint(
                request.method,
                f"{request.path}?precision={precision}",
                hashlib.sha256(body).hexdigest(),
            ),
            now=now,
            action=action,
        )
        return _outcome_response(outcome, self.legacy_error_key)


def _required(request: Request, *names: str) -> None:
    if not any(request.query_params.get(name, "").strip() for name in names):
        raise InfluxQueryInvalid(f"Please provide {' or '.join(names)}.")


# Accepted and ignored (one store), but InfluxDB requires them, so they may not be empty.
_NON_EMPTY = {"type": "string", "minLength": 1}
PRECISION_V2 = OpenApiParameter(
    "precision", str, enum=list(influx.PRECISIONS_V2), description="Default ns."
)
PRECISION_V1 = OpenApiParameter(
    "precision", str, enum=list(influx.PRECISIONS_V1), description="Default ns."
)


class InfluxV2WriteView(_InfluxWriteView):
    """InfluxDB 2's write API. `org` (or `orgID`) and `bucket` are required, as InfluxDB requires
    them, and otherwise ignored: there is one store."""

    precisions = influx.PRECISIONS_V2

    def check_names(self, request: Request) -> None:
        _required(request, "org", "orgID")
        _required(request, "bucket")

    @extend_schema(
        summary="Write InfluxDB line protocol (InfluxDB 2 API)",
        request={"text/plain": str},
        parameters=[
            OpenApiParameter(
                "org", _NON_EMPTY, required=True, description="Or orgID, as InfluxDB takes it."
            ),
            OpenApiParameter("orgID", _NON_EMPTY),
            OpenApiParameter("bucket", _NON_EMPTY, required=True),
            PRECISION_V2,
            IDEMPOTENCY_PARAMETER,
        ],
        responses=ERRORS,
    )
    def post(self, request: Request) -> Response:
        return self.write(request)


class InfluxV1WriteView(_InfluxWriteView):
    """InfluxDB 1.x's write endpoint. `db` is required and otherwise ignored."""

    precisions = influx.PRECISIONS_V1
    legacy_error_key = True

    def check_names(self, request: Request) -> None:
        _required(request, "db")

    @extend_schema(
        summary="Write InfluxDB line protocol (InfluxDB 1.x API)",
        request={"text/plain": str},
        parameters=[
            OpenApiParameter("db", _NON_EMPTY, required=True),
            PRECISION_V1,
            IDEMPOTENCY_PARAMETER,
        ],
        responses=ERRORS,
    )
    def post(self, request: Request) -> Response:
        return self.write(request)
