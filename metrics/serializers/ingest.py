"""Request and response shapes of ingestion: POST /api/metrics/counter, /value and /batch.

The bodies are validated by the point rules in `metrics.points` (and, for a batch, the fast path
of `metrics.json_points`); the shapes here describe them for the OpenAPI schema, with their
limits.
"""

from __future__ import annotations

from datetime import UTC
from typing import Any

from rest_framework import serializers

from ..models import MetricType
from ..points import (
    BATCH_MAX,
    NAME_MAX,
    NAME_RE,
    TAG_KEY_RE,
    TAG_VALUE_MAX,
    TAG_VALUE_PATTERN,
    TAGS_MAX,
    VALUE_MAX,
)
from ..services import PointInput

# --- OpenAPI schemas of the request bodies -------------------------------------------------
# JSON Schema written out rather than derived from DRF serializers: every rule parse_point
# enforces is stated (closed objects, tag-key pattern and count, the value's bounds, a value
# point's required value), so a client generated from the schema, or a fuzzer, sends only what
# the service accepts. Only the timestamp window (±7 days of the moment of the request) cannot be
# written in JSON Schema; it is in the description.

NAME_SCHEMA = {
    "type": "string",
    "pattern": NAME_RE.pattern,
    "minLength": 1,
    "maxLength": NAME_MAX,
    "description": "1-191 of A-Z a-z 0-9 _ . - : /",
}
TAG_KEY_SCHEMA = {"type": "string", "pattern": TAG_KEY_RE.pattern}
TAG_VALUE_SCHEMA = {
    "type": "string",
    "pattern": TAG_VALUE_PATTERN,
    "minLength": 1,
    "maxLength": TAG_VALUE_MAX,
}
TAGS_SCHEMA = {
    "type": ["object", "null"],
    "maxProperties": TAGS_MAX,
    "propertyNames": TAG_KEY_SCHEMA,
    "additionalProperties": TAG_VALUE_SCHEMA,
    "description": (
        f"At most {TAGS_MAX} pairs; keys {TAG_KEY_RE.pattern}, values 1-{TAG_VALUE_MAX} "
        "characters without control characters. They key the series. null: none."
    ),
}
TIMESTAMP_SCHEMA = {
    "oneOf": [
        {"type": "number", "description": "Unix seconds (not milliseconds)"},
        {"type": "string", "format": "date-time", "description": "ISO 8601 with an offset"},
        {"type": "null"},
    ],
    "description": (
        "Unix seconds or ISO 8601 with an offset, within 7 days before (and never older than "
        "RETENTION_DAYS) or after the moment of the request. Default (or null): now."
    ),
}
VALUE_SCHEMA = {"type": "number", "minimum": -VALUE_MAX, "maximum": VALUE_MAX}


def _point_schema(*, value_required: bool, point_type: str | None = None) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "name": NAME_SCHEMA,
        "value": {
            **VALUE_SCHEMA,
            "description": "Required for a value point."
            if value_required
            else "The increment (may be negative). Default 1.",
        },
        "timestamp": TIMESTAMP_SCHEMA,
        "tags": TAGS_SCHEMA,
    }
    required = ["name", "value"] if value_required else ["name"]
    if point_type is not None:
        properties = {"type": {"type": "string", "enum": [point_type]}, **properties}
        required = ["type", *required]
    return {
        "type": "object",
        "additionalProperties": False,
        "required": required,
        "properties": properties,
    }


CounterInput = _point_schema(value_required=False)
ValueInput = _point_schema(value_required=True)
BatchInput = {
    "type": "object",
    "additionalProperties": False,
    "required": ["points"],
    "properties": {
        "points": {
            "type": "array",
            "minItems": 1,
            "maxItems": BATCH_MAX,
            "description": f"1 to {BATCH_MAX} points, stored all or nothing.",
            "items": {
                "oneOf": [
                    _point_schema(value_required=False, point_type=MetricType.COUNTER.value),
                    _point_schema(value_required=True, point_type=MetricType.VALUE.value),
                ]
            },
        }
    },
}


class PointOutput(serializers.Serializer):
    name = serializers.CharField()
    type = serializers.CharField()
    value = serializers.FloatField()
    timestamp = serializers.DateTimeField()
    tags = serializers.DictField(child=serializers.CharField())

    def to_representation(self, instance: PointInput) -> dict[str, Any]:
        return {
            "name": instance.name,
            "type": instance.type,
            "value": instance.value,
            "timestamp": instance.timestamp.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            "tags": dict(instance.tags),
        }


class BatchOutput(serializers.Serializer):
    processed = serializers.IntegerField()
