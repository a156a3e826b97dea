"""GET /api/metrics/{name}: a metric's aggregated time series, bucketed in any time zone;
DELETE /api/metrics/{name}: the metric and all its data (admin scope).

The view parses the query string (`SeriesQueryInput`), asks `metrics.selectors` for the buckets
and renders them; the bucket layout lives in `metrics.buckets`, the SQL in the selectors.
"""

from __future__ import annotations

import math
import zoneinfo
from typing import Any

from django.utils import timezone
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response

from apikeys.api import ApiKeyView
from apikeys.models import Scope

from .. import selectors, services
from ..serializers import SeriesQueryInput, SeriesQueryOutput, series_query_data


def series_respond(request: Request, name: str) -> Response:
    """Answer a query for metric `name` from the request's query string."""
    data = series_query_data(request.query_params)
    metric = selectors.metric_get(name=name)
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


def metric_delete_respond(name: str) -> Response:
    """Delete metric `name` with all its data: 204, or 404 problem+json when there is none."""
    services.metric_delete(name=name)
    return Response(status=204)


def scope_for(method: str) -> str:
    """Reads need read; deleting a metric needs admin."""
    return Scope.ADMIN if method == "DELETE" else Scope.READ


DELETE_SCHEMA = extend_schema(
    summary="Delete a metric with its series, points and rollups",
    operation_id="metrics_delete",
    description="One transaction; needs an API key with the admin scope. A second DELETE is 404.",
    responses={
        204: OpenApiResponse(description="Deleted"),
        401: OpenApiResponse(description="No API key, or not a valid one"),
        403: OpenApiResponse(description="The key lacks the admin scope"),
        404: OpenApiResponse(description="No metric of that name"),
        429: OpenApiResponse(description="Rate limit exhausted (Retry-After)"),
        503: OpenApiResponse(
            description="The database was unavailable or a lock was held too long (Retry-After)"
        ),
    },
)


class SeriesQueryView(ApiKeyView):
    """Every bucket from the one holding `from` to the last one starting before `to`, aligned to
    the interval in `tz`, each aggregating all of its points; `groups` instead of `buckets` with
    `group_by`. Needs the read scope; DELETE needs admin."""

    required_scope = Scope.READ

    def check_permissions(self, request: Request) -> None:
        self.required_scope = scope_for(request.method)
        super().check_permissions(request)

    @extend_schema(
        summary="Read a metric's aggregated time series",
        operation_id="metrics_query",
        parameters=[SeriesQueryInput],
        responses={
            200: SeriesQueryOutput,
            400: OpenApiResponse(
                description="Bad or unknown parameter, or more than 10,080 buckets: "
                "problem+json naming the parameter"
            ),
            401: OpenApiResponse(description="No API key, or not a valid one"),
            403: OpenApiResponse(description="The key lacks the read scope"),
            404: OpenApiResponse(description="No metric of that name"),
            429: OpenApiResponse(description="Rate limit exhausted (Retry-After)"),
            503: OpenApiResponse(description="A percentile query ran out of time (Retry-After)"),
        },
    )
    def get(self, request: Request, name: str) -> Response:
        return series_respond(request, name)

    @DELETE_SCHEMA
    def delete(self, request: Request, name: str) -> Response:
        return metric_delete_respond(name)
