"""Ingestion endpoints: parse, store or queue (once per Idempotency-Key), render."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.utils import timezone
from drf_spectacular.utils import (
    OpenApiParameter,
    extend_schema,
    extend_schema_view,
)
from rest_framework.request import Request
from rest_framework.response import Response

from apikeys.base import ApiKeyView
from apikeys.namespaces import NamespaceForbidden, namespace_checker, namespaces_outside
from glowing_fiesta.exceptions import InvalidInput
from glowing_fiesta.openapi import KEYED_ERRORS, problem_responses
from glowing_fiesta.parsers import StrictJSONParser, TypedBody
from idempotency.decorators import idempotent

from ..batches.dispatch import outbox_create
from ..json_points import batch_decode, parse_batch
from ..models import MetricType
from ..points import PointErrors, parse_point
from ..serializers.ingest import BatchInput, BatchOutput, CounterInput, PointOutput, ValueInput
from ..services import PointInput, points_ingest
from .batches import ACCEPTED, PREFER_PARAMETER, accepted_body, accepted_headers, prefers_async
from .series import (
    DELETE_SCHEMA_FIELDS,
    QUERY_PARAMETERS,
    QUERY_SCHEMA,
    metric_delete_respond,
    scope_for,
    series_respond,
)

# 1-255 printable characters (Latin-1, as HTTP headers carry them); none at either end is a
# space, since servers strip those before the application sees the value.
_KEY_CHAR = r"[!-~\xa1-\xac\xae-\xff]"
IDEMPOTENCY_PARAMETER = OpenApiParameter(
    "Idempotency-Key",
    {
        "type": "string",
        "minLength": 1,
        "maxLength": 255,
        "pattern": f"^{_KEY_CHAR}([ -~\\xa1-\\xac\\xae-\\xff]*{_KEY_CHAR})?$",
    },
    OpenApiParameter.HEADER,
    description=(
        "Optional, at most 255 characters. A retry with the same key and body within 24 hours "
        "returns the first response (with Idempotent-Replayed: true) and stores nothing new."
    ),
)
ERRORS = {
    **problem_responses(
        {
            400: "Invalid body or Idempotency-Key: problem+json listing every error",
            409: "Metric exists with the other type, or a request with this Idempotency-Key "
            "is in progress",
            411: "A chunked body the server could not read: send Content-Length",
            413: f"Body larger than {settings.DATA_UPLOAD_MAX_MEMORY_SIZE // 1024} KiB",
            415: "Body is not application/json",
            422: "Too many tag sets, or Idempotency-Key reused with another body",
        }
    ),
    **KEYED_ERRORS,
}


def _describe(error: dict[str, Any]) -> str:
    where = f"points[{error['index']}]." if "index" in error else ""
    return f"{where}{error['field'] or 'body'} {error['message']}"


def _ingest(
    request: Request,
    parse: Callable[[Any, Any], list[PointInput]],
    render: Callable[[list[PointInput]], dict[str, Any]],
    *,
    batch: bool = False,
) -> Response:
    """Validate with `parse`, check the key's namespaces, then store or queue the points, and
    render."""
    now = timezone.now()
    try:
        points = parse(request.data, now)
    except PointErrors as exc:
        count = len(exc.errors)
        raise InvalidInput(
            f"{count} invalid field{'s' if count > 1 else ''}: "
            + "; ".join(_describe(e) for e in exc.errors[:5])
            + ("; …" if count > 5 else ""),
            errors=exc.errors,
        ) from None
    _namespaces_check(request, points, batch=batch)
    return _store(request, points, render, now=now)


def _namespaces_check(request: Request, points: list[PointInput], *, batch: bool) -> None:
    """403 namespace-forbidden, naming every point outside the key's namespaces: before
    anything is stored or queued, and before an Idempotency-Key is claimed."""
    outside = namespaces_outside(request.auth.namespace_prefixes, (p.name for p in points))
    if not outside:
        return
    message = "is outside this API key's namespaces"
    errors = [
        {**({"index": i} if batch else {}), "field": "name", "message": message} for i in outside
    ]
    names = list(dict.fromkeys(points[i].name for i in outside))
    shown = ", ".join(repr(name) for name in names[:5]) + (", …" if len(names) > 5 else "")
    where = f"{len(outside)} point{'s' if len(outside) > 1 else ''} of " if batch else ""
    raise NamespaceForbidden(
        f"{where}metric{'s' if len(names) > 1 else ''} {shown} {message}.", errors=errors
    )


@idempotent
def _store(
    request: Request,
    points: list[PointInput],
    render: Callable[[list[PointInput]], dict[str, Any]],
    *,
    now: Any,
) -> Response:
    if prefers_async(request):
        batch = outbox_create(api_key_id=request.auth.pk, points=points, now=now)
        body = accepted_body(batch)
        return Response(body, status=202, headers=accepted_headers(body))
    points_ingest(points=points)
    return Response(render(points), status=201)


class _IngestView(ApiKeyView):
    """POST writes points (scope write). GET reads the metric named like the path's last part
    (scope read), so metrics called "counter", "value" or "batch" can be queried too."""

    required_scope = "write"
    reserved_name: str

    def check_permissions(self, request: Request) -> None:
        self.required_scope = "write" if request.method == "POST" else scope_for(request.method)
        super().check_permissions(request)

    def get(self, request: Request) -> Response:
        return series_respond(
            request, self.reserved_name, allowed=namespace_checker(request.auth.namespaces)
        )

    def delete(self, request: Request) -> Response:
        return metric_delete_respond(request, self.reserved_name)


class _PointView(_IngestView):
    kind: str

    def post(self, request: Request) -> Response:
        return _ingest(
            request,
            lambda data, now: [parse_point(data, kind=self.kind, now=now)],
            lambda points: PointOutput(points[0]).data,
        )


def _ingest_schema(summary: str, request: dict, created: type, reserved_name: str) -> Any:
    return extend_schema_view(
        post=extend_schema(
            summary=summary,
            request={"application/json": request},
            responses={201: created, **ACCEPTED, **ERRORS},
            parameters=[IDEMPOTENCY_PARAMETER, PREFER_PARAMETER],
        ),
        # The route of a write answers GET for the metric that bears its name.
        get=extend_schema(
            operation_id=f"metrics_query_{reserved_name}",
            parameters=QUERY_PARAMETERS,
            description=f"GET /api/metrics/{{name}} for the metric named {reserved_name!r}.",
            **QUERY_SCHEMA,
        ),
        delete=extend_schema(
            operation_id=f"metrics_delete_{reserved_name}",
            **{
                **DELETE_SCHEMA_FIELDS,
                "description": f"DELETE /api/metrics/{{name}} for the metric named "
                f"{reserved_name!r}.",
            },
        ),
    )


@_ingest_schema("Increment a counter", CounterInput, PointOutput, "counter")
class CounterView(_PointView):
    kind = MetricType.COUNTER
    reserved_name = "counter"


@_ingest_schema("Record a value", ValueInput, PointOutput, "value")
class ValueView(_PointView):
    kind = MetricType.VALUE
    reserved_name = "value"


class BatchJSONParser(StrictJSONParser):
    """The strict parser, with the usual batch bodies read straight into records."""

    typed_decode = staticmethod(batch_decode)


@_ingest_schema("Write 1-1000 points at once, all or nothing", BatchInput, BatchOutput, "batch")
class BatchView(_IngestView):
    reserved_name = "batch"
    parser_classes = [BatchJSONParser]

    def post(self, request: Request) -> Response:
        return _ingest(
            request,
            lambda data, now: parse_batch(
                data.value if isinstance(data, TypedBody) else data, now=now
            ),
            lambda points: {"processed": len(points)},
            batch=True,
        )
