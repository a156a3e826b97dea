"""GET /api/metrics/{name}: a metric's aggregated time series, bucketed in any time zone;
DELETE /api/metrics/{name}: the metric and all its data (admin scope).

The view parses the query string (`SeriesQueryInput`), asks `metrics.selectors` for the buckets
and renders them; the bucket layout lives in `metrics.buckets`, the SQL in the selectors.
"""

from __future__ import annotations

import math
import zoneinfo
from collections.abc import Callable
from typing import Any

from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.response import Response

from apikeys.base import ApiKeyView
from apikeys.models import Scope
from apikeys.namespaces import namespace_checker
from glowing_fiesta.openapi import KEYED_ERRORS, problem_responses

from .. import selectors, services
from ..points import name_ok
from ..serializers.ingest import NAME_SCHEMA
from ..serializers.query import SeriesQueryInput, SeriesQueryOutput, series_query_data


def series_respond(
    request: Request, name: str, *, allowed: Callable[[str], bool] | None
) -> Response:
    """Answer a query for metric `name` from the request's query string; a name `allowed`
    refuses (a key's namespaces, apikeys.namespaces) is the 404 of a metric that does not
    exist. None: every metric (the admin's staff session)."""
    data = series_query_data(request.query_params)
    if not name_ok(name):
        # No metric can have such a name; answered before the name (a NUL, say) reaches SQL.
        raise NotFound(f"No metric named {name[:200]!r}.")
    metric = selectors.metric_get(name=name, allowed=allowed)
    params = SeriesQueryInput(data=data, context={"metric": metric, "now": timezone.now()})
    params.is_valid(raise_exception=True)
    p = params.validated_data
    tz: zoneinfo.ZoneInfo = p["tz"]
    query = selectors.SeriesQuery(
        metric=metric,
        start=p["from"],
        end=p["to"],
        interval=p["interval"],
        aggregation=p["aggregation"],
        tz=tz,
        fill=p["fill"],
        tags=tuple(p.get("tag", ())),
        group_by=p.get("group_by"),
    )
    result = selectors.series_query(query=query)
    starts = result.starts
    body: dict[str, Any] = {
        "metric": metric.name,
        "type": metric.type,
        "interval": query.interval,
        "aggregation": query.aggregation,
        "tz": tz.key,
        "fill": query.fill,
        "from": query.start.astimezone(tz).isoformat(),
        "to": query.end.astimezone(tz).isoformat(),
    }
    if isinstance(result, selectors.GroupedSeries):
        body["group_by"] = query.group_by
        body["groups"] = [
            {"tags": group.tags, "buckets": _buckets(starts, group.values)}
            for group in result.groups
        ]
    else:
        body["buckets"] = _buckets(starts, result.values)
    return Response(body)


def _buckets(starts: list[str], values: list[selectors.Value]) -> list[dict[str, Any]]:
    # A sum can overflow to infinity, which JSON cannot carry: it is reported as null.
    return [
        {"start": start, "value": v if v is None or math.isfinite(v) else None}
        for start, v in zip(starts, values, strict=True)
    ]


def metric_delete_respond(request: Request, name: str) -> Response:
    """Delete metric `name` with all its data: 204, or 404 problem+json when there is none or
    it lies outside the key's namespaces."""
    if not name_ok(name):
        raise NotFound(f"No metric named {name[:200]!r}.")
    services.metric_delete(name=name, allowed=namespace_checker(request.auth.namespaces))
    return Response(status=204)


def scope_for(method: str) -> str:
    """Reads need read; deleting a metric needs admin."""
    return Scope.ADMIN if method == "DELETE" else Scope.READ


DELETE_SCHEMA_FIELDS: dict[str, Any] = {
    "summary": "Delete a metric with its series, points and rollups",
    "description": (
        "The metric and its series are gone at once, for every read and write (a later write "
        "creates the metric anew); its points and rollups are purged by a worker within seconds. "
        "Needs an API key with the admin scope. A second DELETE is 404."
    ),
    "responses": {
        204: OpenApiResponse(description="Deleted"),
        **problem_responses({404: "No metric of that name"}),
        **KEYED_ERRORS,
    },
}
DELETE_SCHEMA = extend_schema(
    operation_id="metrics_delete",
    parameters=[OpenApiParameter("name", NAME_SCHEMA, OpenApiParameter.PATH)],
    **DELETE_SCHEMA_FIELDS,
)

QUERY_PARAMETERS = [SeriesQueryInput]
# Shared with GET on /api/metrics/counter, value and batch, which read the metric of that name.
QUERY_SCHEMA: dict[str, Any] = {
    "summary": "Read a metric's aggregated time series",
    "responses": {
        200: SeriesQueryOutput,
        **problem_responses(
            {
                400: "Bad or unknown parameter, or more than 10,080 buckets: problem+json "
                "naming the parameter",
                404: "No metric of that name",
                503: "A percentile query ran out of time, or the database is unavailable "
                "(Retry-After)",
            }
        ),
        **{k: v for k, v in KEYED_ERRORS.items() if k[0] != 503},
    },
}


class SeriesQueryView(ApiKeyView):
    """Every bucket from the one holding `from` to the last one starting before `to`, aligned to
    the interval in `tz`, each aggregating all of its points; `groups` instead of `buckets` with
    `group_by`. Needs the read scope; DELETE needs admin."""

    required_scope = Scope.READ

    def check_permissions(self, request: Request) -> None:
        self.required_scope = scope_for(request.method)
        super().check_permissions(request)

    @extend_schema(
        operation_id="metrics_query",
        parameters=[
            OpenApiParameter("name", NAME_SCHEMA, OpenApiParameter.PATH),
            *QUERY_PARAMETERS,
        ],
        **QUERY_SCHEMA,
    )
    def get(self, request: Request, name: str) -> Response:
        return series_respond(request, name, allowed=namespace_checker(request.auth.namespaces))

    @DELETE_SCHEMA
    def delete(self, request: Request, name: str) -> Response:
        return metric_delete_respond(request, name)
