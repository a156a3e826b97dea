"""Admin for metrics (list, series, chart, Explore, delete with data) and queued batches."""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.db.models.expressions import RawSQL
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from . import buckets, discovery, purges, selectors
from .batches.process import outbox_points
from .batches.sweep import outbox_retry
from .models import IngestBatch, Metric, MetricType, Series
from .views.chart import ChartDataView

EXPLORE_PAGE_SIZE = 50


class SeriesInline(admin.TabularInline):
    model = Series
    fields = ("tags", "created_at")
    readonly_fields = ("tags", "created_at")
    extra = 0
    can_delete = False
    show_change_link = False
    max_num = 0  # series are created by writes, never by hand


@admin.register(Metric)
class MetricAdmin(admin.ModelAdmin):
    list_display = ("name", "type", "created_at", "series_count", "last_point", "chart")
    list_filter = ("type",)
    search_fields = ("name",)
    readonly_fields = ("name", "type", "created_at")
    inlines = [SeriesInline]
    actions = ["delete_with_data"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Metric]:
        # Correlated subqueries rather than Count(): no GROUP BY over the whole list, and the
        # same SQL as GET /api/metrics.
        return (
            super()
            .get_queryset(request)
            .annotate(
                _series_count=RawSQL(discovery.series_count_sql("metrics"), []),  # noqa: S611 - constant SQL
                _last_point=RawSQL(discovery.last_point_sql("metrics"), []),  # noqa: S611 - constant SQL
            )
        )

    @admin.display(description="series", ordering="_series_count")
    def series_count(self, obj: Metric) -> int:
        return obj._series_count

    @admin.display(description="last point", ordering="_last_point", empty_value="-")
    def last_point(self, obj: Metric) -> Any:
        return obj._last_point

    @admin.display(description="chart")
    def chart(self, obj: Metric) -> str:
        return format_html(
            '<a href="{}">chart</a>', reverse("admin:metrics_metric_chart", args=[obj.pk])
        )

    def get_urls(self) -> list:
        wrap = self.admin_site.admin_view
        return [
            path("explore/", wrap(self.explore_view), name="metrics_metric_explore"),
            path("<int:metric_id>/chart/", wrap(self.chart_view), name="metrics_metric_chart"),
            path(
                "<int:metric_id>/chart/data/",
                wrap(ChartDataView.as_view()),
                name="metrics_metric_chart_data",
            ),
            *super().get_urls(),
        ]

    def explore_view(self, request: HttpRequest) -> HttpResponse:
        """Metrics with a search box, each with a link to its chart; paged by cursor."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        search = request.GET.get("q", "").strip()[:191]
        try:
            after = discovery.cursor_decode(request.GET["cursor"], str)
        except (KeyError, discovery.InvalidCursor):
            after = None
        page = discovery.metrics_list(search=search or None, after=after, limit=EXPLORE_PAGE_SIZE)
        next_query = None
        if page.next_cursor:
            query = request.GET.copy()
            query["cursor"] = page.next_cursor
            next_query = query.urlencode()
        context = {
            **self.admin_site.each_context(request),
            "title": "Explore metrics",
            "opts": self.model._meta,
            "search": search,
            "metrics": [
                {"row": row, "chart_url": reverse("admin:metrics_metric_chart", args=[row.id])}
                for row in page.results
            ],
            "next_query": next_query,
        }
        return TemplateResponse(request, "admin/metrics/metric/explore.html", context)

    def chart_view(self, request: HttpRequest, metric_id: int) -> HttpResponse:
        """The chart page: controls and an empty plot the page's script fills from JSON."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        metric = get_object_or_404(Metric, pk=metric_id)
        default = selectors.default_aggregation(metric.type)
        aggregations = [default] + [
            a
            for a in selectors.AGGREGATIONS
            if a != default and (a != "rate" or metric.type == MetricType.COUNTER)
        ]
        tags = discovery.tags_list(metric=metric)
        context = {
            **self.admin_site.each_context(request),
            "title": f"Chart: {metric.name}",
            "opts": self.model._meta,
            "original": metric,
            "metric": metric,
            "aggregations": aggregations,
            "intervals": selectors.INTERVALS,
            "tag_keys": tags.keys,
            "chart_config": json.dumps(
                {
                    "metric": metric.name,
                    "type": metric.type,
                    "dataUrl": reverse("admin:metrics_metric_chart_data", args=[metric.pk]),
                    "aggregations": aggregations,
                    "tags": tags.keys,
                    "maxBuckets": buckets.MAX_BUCKETS,
                }
            ),
        }
        return TemplateResponse(request, "admin/metrics/metric/chart.html", context)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # metrics are created by their first write

    def has_delete_permission(self, request: HttpRequest, obj: Metric | None = None) -> bool:
        # Django's row-by-row cascade would load every point; deletion goes through the action.
        return False

    def get_actions(self, request: HttpRequest) -> dict:
        actions = super().get_actions(request)
        if request.user.has_perm("metrics.delete_metric"):
            return actions
        actions.pop("delete_with_data", None)
        return actions

    @admin.action(description="Delete selected metrics with all their points and rollups")
    def delete_with_data(self, request: HttpRequest, queryset: QuerySet[Metric]) -> None:
        names = []
        for metric in queryset:
            if purges.purge_create(metric_id=metric.id, now=timezone.now()) is not None:
                names.append(metric.name)
        self.message_user(
            request, f"Deleted {len(names)} metric(s): {', '.join(names)}", messages.SUCCESS
        )


@admin.register(IngestBatch)
class IngestBatchAdmin(admin.ModelAdmin):
    """Batches queued with Prefer: respond-async; failed ones can be sent again."""

    list_display = ("id", "api_key", "state", "points", "attempts", "created_at", "processed_at")
    list_filter = ("state",)
    list_select_related = ("api_key",)
    search_fields = ("=id", "error")
    ordering = ("-id",)
    fields = (
        "api_key",
        "state",
        "points",
        "attempts",
        "error",
        "created_at",
        "updated_at",
        "claimed_at",
        "processed_at",
        "first_points",
    )
    readonly_fields = fields
    actions = ["retry"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # batches come from the API

    def has_change_permission(self, request: HttpRequest, obj: IngestBatch | None = None) -> bool:
        return False  # state changes only through the worker or the retry action

    def get_actions(self, request: HttpRequest) -> dict:
        # The retry action changes rows, though the change form is read-only for everyone.
        actions = super().get_actions(request)
        if not request.user.has_perm("metrics.change_ingestbatch"):
            actions.pop("retry", None)
        return actions

    @admin.display(description="points (the first 20)")
    def first_points(self, obj: IngestBatch) -> str:
        points = outbox_points(obj)
        lines = [
            f"{p.timestamp.isoformat()} {p.type} {p.name} {p.value!r} {dict(p.tags)}"
            for p in points[:20]
        ]
        if len(points) > 20:
            lines.append(f"… and {len(points) - 20} more")
        return "\n".join(lines)

    @admin.action(description="Retry selected failed batches")
    def retry(self, request: HttpRequest, queryset: QuerySet[IngestBatch]) -> None:
        selected = list(queryset.values_list("pk", flat=True))
        retried = outbox_retry(batch_ids=selected, now=timezone.now())
        skipped = len(selected) - len(retried)
        message = f"{len(retried)} batch(es) queued again"
        if skipped:
            message += f"; {skipped} skipped (only failed batches are retried)"
        self.message_user(request, message, messages.SUCCESS if retried else messages.WARNING)
