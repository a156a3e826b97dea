"""Request and response shapes of a series query: GET /api/metrics/{name}.

The query string is parsed by `SeriesQueryInput`; `query_string_data` also serves the discovery
endpoints' query strings.
"""

from __future__ import annotations

import functools
import math
import re
import zoneinfo
from collections.abc import Collection, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from drf_spectacular.utils import extend_schema_field, inline_serializer
from rest_framework import serializers

from .. import selectors
from ..models import Metric, MetricType
from ..points import TAG_KEY_RE, TAG_VALUE_CHARS, TAG_VALUE_MAX, tag_value_ok

DEFAULT_RANGE = timedelta(hours=24)
PARAMETERS = ("from", "to", "interval", "aggregation", "tz", "fill", "tag", "group_by")
REPEATABLE = {"tag"}
# Years outside this range are refused rather than risk overflow in date arithmetic.
YEAR_MIN, YEAR_MAX = 1900, 9000
# ASCII digits only: \d would also take other scripts' digits, which no client means.
UNIX_RE = re.compile(r"-?[0-9]+(\.[0-9]+)?")
# "+02:00" arrives as " 02:00" when a client does not percent-encode the "+".
SPACE_OFFSET_RE = re.compile(r"^(\d{4}-?\d\d-?\d\dT[\d:.]+) (\d\d(:?\d\d)?)$")


@functools.cache
def _zone_names() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


@extend_schema_field(
    {
        "type": "string",
        "format": "date-time",
        "description": "ISO 8601 with an offset, or Unix seconds",
    }
)
class TimestampField(serializers.Field):
    """ISO 8601 with an explicit offset, or Unix seconds (integer or fractional)."""

    default_error_messages = {
        "invalid": "Must be ISO 8601 with an offset (2026-03-29T00:00:00+01:00) or Unix seconds.",
        "naive": "Has no UTC offset; add one (Z or +01:00), a local time is ambiguous.",
        "range": f"Must lie between the years {YEAR_MIN} and {YEAR_MAX}.",
    }

    def to_internal_value(self, data: Any) -> datetime:
        raw = str(data)
        if UNIX_RE.fullmatch(raw):
            number = float(raw)
            if not math.isfinite(number) or abs(number) > 2e11:
                self.fail("range")
            when = datetime.fromtimestamp(number, UTC)
        else:
            raw = SPACE_OFFSET_RE.sub(r"\1+\2", raw)
            try:
                when = datetime.fromisoformat(raw)
            except ValueError:
                self.fail("invalid")
            if when.tzinfo is None or when.utcoffset() is None:
                self.fail("naive")
        # Checked before converting: year 1 or 9999 with an offset would overflow.
        if not YEAR_MIN <= when.year <= YEAR_MAX:
            self.fail("range")
        return when.astimezone(UTC)


TAG_FILTER_PATTERN = f"^{TAG_KEY_RE.pattern[1:-1]}:{TAG_VALUE_CHARS}{{1,{TAG_VALUE_MAX}}}$"


@extend_schema_field({"type": "string", "pattern": TAG_FILTER_PATTERN})
class TagFilterField(serializers.CharField):
    """key:value (the value may itself hold colons)."""

    def to_internal_value(self, data: Any) -> tuple[str, str]:
        text = super().to_internal_value(data)
        key, sep, value = text.partition(":")
        if not sep:
            raise serializers.ValidationError(f"{text[:70]!r} is not key:value.")
        if not TAG_KEY_RE.fullmatch(key):
            raise serializers.ValidationError(
                f"Key {key[:70]!r} must match [A-Za-z_][A-Za-z0-9_.-]{{0,63}}."
            )
        if not tag_value_ok(value):
            raise serializers.ValidationError(
                f"The value must be 1-{TAG_VALUE_MAX} characters, none of them a control character."
            )
        return key, value


@extend_schema_field({"type": "string", "pattern": TAG_KEY_RE.pattern})
class TagKeyField(serializers.CharField):
    """A tag key, matched whole."""

    def to_internal_value(self, data: Any) -> str:
        text = super().to_internal_value(data)
        if not TAG_KEY_RE.fullmatch(text):
            raise serializers.ValidationError(
                f"{text[:70]!r} must match [A-Za-z_][A-Za-z0-9_.-]{{0,63}}."
            )
        return text


@extend_schema_field({"type": "string", "enum": sorted(_zone_names())})
class TimeZoneField(serializers.CharField):
    """An IANA zone name; the schema lists every one this server knows."""


class SeriesQueryInput(serializers.Serializer):
    """The query string of GET /api/metrics/{name}; needs the metric in context["metric"]."""

    start = TimestampField(required=False, help_text="Default: `to` minus 24 hours.")
    to = TimestampField(required=False, help_text="Default: now.")
    interval = serializers.ChoiceField(choices=selectors.INTERVALS, default="hour")
    aggregation = serializers.ChoiceField(
        choices=selectors.AGGREGATIONS,
        required=False,
        help_text="Default: sum for counters, avg for values. rate is for counters only.",
    )
    tz = TimeZoneField(
        default="UTC", trim_whitespace=False, help_text="IANA time zone, e.g. Europe/Berlin."
    )
    fill = serializers.ChoiceField(
        choices=selectors.FILLS,
        required=False,
        help_text="Empty buckets. Default: zero for count and a counter's sum and rate, else null.",
    )
    tag = serializers.ListField(
        child=TagFilterField(allow_blank=False, trim_whitespace=False),
        required=False,
        help_text="key:value, repeatable; every one must match.",
    )
    group_by = TagKeyField(
        required=False, trim_whitespace=False, help_text="A tag key: one series per value of it."
    )

    def get_fields(self) -> dict[str, serializers.Field]:
        # "from" is a Python keyword, so the field is declared as `start` and renamed here.
        fields = super().get_fields()
        fields["from"] = fields.pop("start")
        return {name: fields[name] for name in PARAMETERS}

    def validate_tz(self, value: str) -> zoneinfo.ZoneInfo:
        # Checked against the list of zones rather than by trying to load it, so a value can
        # never name a file outside the zone database.
        if value not in _zone_names():
            raise serializers.ValidationError(
                f"Unknown time zone {value!r}; use an IANA name such as Europe/Berlin."
            )
        return zoneinfo.ZoneInfo(value)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        metric: Metric = self.context["metric"]
        end = attrs.get("to") or self.context["now"]
        start = attrs.get("from") or end - DEFAULT_RANGE
        if start >= end:
            raise serializers.ValidationError({"from": "Must be earlier than `to`."})
        aggregation = attrs.get("aggregation") or selectors.default_aggregation(metric.type)
        if aggregation == "rate" and metric.type != MetricType.COUNTER:
            raise serializers.ValidationError(
                {"aggregation": f"rate is for counters; {metric.name!r} is a {metric.type}."}
            )
        return {
            **attrs,
            "from": start,
            "to": end,
            "aggregation": aggregation,
            "fill": attrs.get("fill") or selectors.default_fill(metric.type, aggregation),
        }


def query_string_data(
    params: Any, *, allowed: Iterable[str], repeatable: Collection[str]
) -> dict[str, Any]:
    """A query string (a QueryDict) as serializer data: lists for the `repeatable` names; names
    not `allowed`, or repeated when they may not be, refused (400)."""
    unknown = sorted(set(params) - set(allowed))
    repeated = sorted(k for k in params if k not in repeatable and len(params.getlist(k)) > 1)
    errors = {name: "Unknown parameter." for name in unknown}
    errors |= {name: "May be given only once." for name in repeated}
    if errors:
        raise serializers.ValidationError(errors)
    return {k: params.getlist(k) if k in repeatable else params[k] for k in params}


def series_query_data(params: Any) -> dict[str, Any]:
    """The query string as SeriesQueryInput data."""
    return query_string_data(params, allowed=PARAMETERS, repeatable=REPEATABLE)


class Bucket(serializers.Serializer):
    start = serializers.CharField(help_text="The bucket's start, ISO 8601 in `tz`.")
    value = serializers.FloatField(allow_null=True)


SeriesQueryOutput = inline_serializer(
    "SeriesQueryOutput",
    {
        "metric": serializers.CharField(),
        "type": serializers.ChoiceField(choices=MetricType.choices),
        "interval": serializers.ChoiceField(choices=selectors.INTERVALS),
        "aggregation": serializers.ChoiceField(choices=selectors.AGGREGATIONS),
        "tz": serializers.CharField(),
        "fill": serializers.ChoiceField(choices=selectors.FILLS),
        "from": serializers.CharField(),
        "to": serializers.CharField(),
        # One series (`buckets`), or with group_by one per tag value (`group_by`, `groups`).
        "buckets": Bucket(many=True, required=False),
        "group_by": serializers.CharField(required=False),
        "groups": inline_serializer(
            "SeriesGroup",
            {
                # null: the points of this group carry no such tag.
                "tags": serializers.DictField(child=serializers.CharField(allow_null=True)),
                "buckets": Bucket(many=True),
            },
            many=True,
            required=False,
        ),
    },
)
