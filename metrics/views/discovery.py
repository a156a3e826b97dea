"""GET /api/metrics, /api/series and /api/tags: which metrics, tag sets and tag values exist.

Each view parses its query string with a serializer from `metrics.serializers.discovery`, calls one
selector of `metrics.discovery` and renders; lists are paged by an opaque cursor in `next`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response

from apikeys.base import ApiKeyView
from apikeys.models import Scope
from apikeys.namespaces import namespace_checker

from .. import discovery, selectors
from ..models import Metric
from ..serializers.discovery import (
    MetricListInput,
    MetricListOutput,
    SeriesListInput,
    SeriesListOutput,
    TagListInput,
    TagListOutput,
    discovery_query_data,
)

ERRORS = {
    400: OpenApiResponse(description="Bad, unknown or repeated parameter, or a bad cursor"),
    401: OpenApiResponse(description="No API key, or not a valid one"),
    403: OpenApiResponse(description="The key lacks the read scope"),
    429: OpenApiResponse(description="Rate limit exhausted (Retry-After)"),
}
NOT_FOUND = {404: OpenApiResponse(description="No metric of that name")}


def _validated(serializer: type, request: Request) -> dict[str, Any]:
    params = serializer(data=discovery_query_data(serializer, request.query_params))
    params.is_valid(raise_exception=True)
    return params.validated_data


def _metric_get(request: Request, name: str) -> Metric:
    """Metric `name`, if the request's key may read it (else 404, as if it did not exist)."""
    return selectors.metric_get(name=name, allowed=namespace_checker(request.auth.namespaces))


def _iso(when: datetime | None) -> str | None:
    # As DRF's DateTimeField renders it, without its per-field machinery (a third of the time
    # of a 100-row page went there).
    return None if when is None else when.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _page(request: Request, page: discovery.Page, rows: list[dict[str, Any]]) -> Response:
    next_url = None
    if page.next_cursor is not None:
        query = request.query_params.copy()
        query["cursor"] = page.next_cursor
        next_url = request.build_absolute_uri(f"{request.path}?{query.urlencode()}")
    return Response({"results": rows, "next": next_url})


class MetricListView(ApiKeyView):
    """Metrics in name order, with their type, series count and latest point."""

    required_scope = Scope.READ

    @extend_schema(
        summary="List metrics",
        operation_id="metrics_list",
        parameters=[MetricListInput],
        responses={200: MetricListOutput, **ERRORS},
    )
    def get(self, request: Request) -> Response:
        p = _validated(MetricListInput, request)
        page = discovery.metrics_list(
            search=p.get("search"),
            prefix=p.get("prefix"),
            metric_type=p.get("type"),
            after=p.get("cursor"),
            limit=p["limit"],
            namespaces=request.auth.namespaces,
        )
        rows = [
            {
                "name": m.name,
                "type": m.type,
                "created_at": _iso(m.created_at),
                "series": m.series,
                "last_point_at": _iso(m.last_point_at),
            }
            for m in page.results
        ]
        return _page(request, page, rows)


class SeriesListView(ApiKeyView):
    """A metric's tag sets in creation order, each with its latest point."""

    required_scope = Scope.READ

    @extend_schema(
        summary="List a metric's series (tag sets)",
        operation_id="series_list",
        parameters=[SeriesListInput],
        responses={200: SeriesListOutput, **ERRORS, **NOT_FOUND},
    )
    def get(self, request: Request) -> Response:
        p = _validated(SeriesListInput, request)
        metric = _metric_get(request, p["metric"])
        page = discovery.series_list(
            metric=metric, tags=p.get("tag", ()), after=p.get("cursor"), limit=p["limit"]
        )
        rows = [
            {"id": s.id, "tags": s.tags, "last_point_at": _iso(s.last_point_at)}
            for s in page.results
        ]
        return _page(request, page, rows)


class TagListView(ApiKeyView):
    """Every tag key of a metric with its values, for building filters."""

    required_scope = Scope.READ

    @extend_schema(
        summary="List a metric's tag keys and values",
        operation_id="tags_list",
        parameters=[TagListInput],
        responses={200: TagListOutput, **ERRORS, **NOT_FOUND},
    )
    def get(self, request: Request) -> Response:
        p = _validated(TagListInput, request)
        metric = _metric_get(request, p["metric"])
        tags = discovery.tags_list(metric=metric)
        return Response(
            {
                "metric": metric.name,
                "keys": tags.keys,
                "values_max": discovery.TAG_VALUES_MAX,
                "truncated": tags.truncated,
            }
        )
