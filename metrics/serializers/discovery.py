"""Request and response shapes of the discovery endpoints: GET /api/metrics, /api/series and
/api/tags (metrics/views/discovery.py)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field, inline_serializer
from rest_framework import serializers

from .. import discovery
from ..models import MetricType
from ..points import NAME_MAX
from .ingest import NAME_SCHEMA
from .query import TagFilterField, query_string_data


class _PageInput(serializers.Serializer):
    limit = serializers.IntegerField(
        min_value=1,
        max_value=discovery.LIMIT_MAX,
        default=discovery.LIMIT_DEFAULT,
        help_text=f"Rows per page, 1-{discovery.LIMIT_MAX}.",
    )
    cursor = serializers.CharField(
        required=False, help_text="The cursor of the page to read, from the last page's `next`."
    )
    cursor_type: type = str

    def validate_cursor(self, value: str) -> Any:
        try:
            return discovery.cursor_decode(value, self.cursor_type)
        except discovery.InvalidCursor as exc:
            raise serializers.ValidationError(str(exc)) from None


def _name_filter(help_text: str) -> serializers.CharField:
    """An optional filter on metric names; empty means no filter, as a search box left blank
    sends it."""
    return serializers.CharField(
        required=False,
        allow_blank=True,
        trim_whitespace=False,
        max_length=NAME_MAX,
        help_text=help_text,
    )


class MetricListInput(_PageInput):
    """The query string of GET /api/metrics."""

    search = _name_filter("Case-insensitive substring of the name.")
    prefix = _name_filter("The name starts with this (case-sensitive).")
    type = serializers.ChoiceField(choices=MetricType.choices, required=False)


@extend_schema_field(NAME_SCHEMA)
class MetricNameField(serializers.CharField):
    """A metric's name in a query string (any other string names no metric: 404)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(max_length=NAME_MAX, help_text="The metric's name.", **kwargs)


class SeriesListInput(_PageInput):
    """The query string of GET /api/series."""

    metric = MetricNameField()
    tag = serializers.ListField(
        child=TagFilterField(allow_blank=False, trim_whitespace=False),
        required=False,
        help_text="key:value, repeatable; every one must match.",
    )
    cursor_type = int


class TagListInput(serializers.Serializer):
    """The query string of GET /api/tags."""

    metric = MetricNameField()


def discovery_query_data(serializer: type[serializers.Serializer], params: Any) -> dict[str, Any]:
    """The query string as `serializer` data: its list fields may repeat."""
    fields = serializer().fields
    repeatable = {name for name, f in fields.items() if isinstance(f, serializers.ListField)}
    return query_string_data(params, allowed=fields, repeatable=repeatable)


_NEXT = serializers.URLField(allow_null=True, help_text="The next page, or null on the last.")
_LAST_POINT = serializers.DateTimeField(
    allow_null=True,
    help_text="Start of the latest minute holding a point (from the minute rollups); "
    "null without points.",
)


class MetricSummaryOutput(serializers.Serializer):
    name = serializers.CharField()
    type = serializers.CharField()
    created_at = serializers.DateTimeField()
    series = serializers.IntegerField(help_text="How many tag sets the metric has.")
    last_point_at = _LAST_POINT


class SeriesSummaryOutput(serializers.Serializer):
    id = serializers.IntegerField(help_text="The series' id; pages are in id (creation) order.")
    tags = serializers.DictField(child=serializers.CharField())
    last_point_at = _LAST_POINT


MetricListOutput = inline_serializer(
    "MetricListOutput", {"results": MetricSummaryOutput(many=True), "next": _NEXT}
)
SeriesListOutput = inline_serializer(
    "SeriesListOutput", {"results": SeriesSummaryOutput(many=True), "next": _NEXT}
)
TagListOutput = inline_serializer(
    "TagListOutput",
    {
        "metric": serializers.CharField(),
        "keys": serializers.DictField(
            child=serializers.ListField(child=serializers.CharField()),
            help_text=f"Each tag key with its values in order, at most "
            f"{discovery.TAG_VALUES_MAX} per key.",
        ),
        "values_max": serializers.IntegerField(help_text="The cap on values per key."),
        "truncated": serializers.ListField(
            child=serializers.CharField(), help_text="Keys with more values than the cap."
        ),
    },
)
