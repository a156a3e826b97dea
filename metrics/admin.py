from django.contrib import admin, messages
from django.db.models import Count, QuerySet
from django.http import HttpRequest
from django.utils import timezone

from . import batches, storage
from .models import IngestBatch, Metric, Series


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
    list_display = ("name", "type", "created_at", "series_count")
    list_filter = ("type",)
    search_fields = ("name",)
    readonly_fields = ("name", "type", "created_at")
    inlines = [SeriesInline]
    actions = ["delete_with_data"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Metric]:
        return super().get_queryset(request).annotate(_series_count=Count("series"))

    @admin.display(description="series", ordering="_series_count")
    def series_count(self, obj: Metric) -> int:
        return obj._series_count

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
            storage.metric_delete(metric.id)
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
        points = batches.batch_points(obj)
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
        retried = batches.batches_retry(batch_ids=selected, now=timezone.now())
        skipped = len(selected) - len(retried)
        message = f"{len(retried)} batch(es) queued again"
        if skipped:
            message += f"; {skipped} skipped (only failed batches are retried)"
        self.message_user(request, message, messages.SUCCESS if retried else messages.WARNING)
