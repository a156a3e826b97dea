from django.contrib import admin, messages
from django.db.models import Count, QuerySet
from django.http import HttpRequest

from . import storage
from .models import Metric, Series


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
