"""The rules of a point, shared by every way points arrive (JSON, protocols, the outbox).

Validation is plain Python rather than DRF field machinery: a 1000-point batch is validated in
about a millisecond instead of tens, and every invalid point is reported with its index, field
and message. `metrics.serializers` wraps these rules for the OpenAPI schema. A batch body of JSON
points is read and checked by `metrics.json_points`, quickly, against these same rules.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings

from .models import MetricType
from .services import PointInput

NAME_MAX = 191
NAME_RE = re.compile(r"^[A-Za-z0-9_.\-:/]{1,191}$")
DATE_ONLY_RE = re.compile(r"^\d{4}-?\d{2}-?\d{2}$")
VALUE_MAX = 1e15
TAGS_MAX = 10
TAG_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")
TAG_VALUE_MAX = 191
# A tag value: 1-191 characters, none of them a control character (C0, DEL, C1) or a line or
# paragraph separator; a lone surrogate (not a character at all) is refused too. One rule for
# the OpenAPI schema (TAG_VALUE_PATTERN) and the service, so the schema tells the truth.
TAG_VALUE_CHARS = r"[^\x00-\x1f\x7f-\x9f\u2028\u2029]"
TAG_VALUE_PATTERN = f"^{TAG_VALUE_CHARS}*$"
_TAG_VALUE_RE = re.compile(f"{TAG_VALUE_CHARS}{{1,{TAG_VALUE_MAX}}}")
BATCH_MAX = 1000
TIMESTAMP_WINDOW = timedelta(days=7)
# A Unix timestamp in seconds passes 1e11 only in the year 5138; such a number is milliseconds.
MILLISECONDS_HINT = 1e11

POINT_TYPES = frozenset(MetricType.values)  # built once: Enum.values rebuilds its list per call
VALUE = MetricType.VALUE.value
POINT_FIELDS = {"name", "value", "timestamp", "tags"}
BATCH_POINT_FIELDS = POINT_FIELDS | {"type"}


class PointErrors(Exception):
    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__(errors)
        self.errors = errors


def _number(raw: Any) -> float | None:
    # JSON numbers only: bool is an int subclass in Python, and "12" is a string.
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        return None
    return float(raw)


def parse_value(raw: Any) -> float:
    number = _number(raw)
    if number is None:
        raise ValueError("must be a JSON number")
    if not math.isfinite(number):
        raise ValueError("must be finite")
    if not value_ok(number):
        raise ValueError("must lie within ±1e15")
    return number


@dataclass(frozen=True)
class Window:
    """The accepted timestamps around `now`: ±7 days, and never older than retention keeps."""

    now: datetime
    oldest: datetime
    newest: datetime

    @classmethod
    def around(cls, now: datetime) -> Window:
        back = min(TIMESTAMP_WINDOW, timedelta(days=settings.RETENTION_DAYS))
        return cls(now=now, oldest=now - back, newest=now + TIMESTAMP_WINDOW)


def parse_timestamp(raw: Any, *, now: datetime, window: Window | None = None) -> datetime:
    """Unix seconds or ISO 8601 with an explicit offset, within the accepted window of `now`."""
    window = window or Window.around(now)
    number = _number(raw)
    if number is not None:
        if not math.isfinite(number):
            raise ValueError("must be finite")
        if abs(number) >= MILLISECONDS_HINT:
            raise ValueError("looks like milliseconds; send Unix seconds (e.g. divide by 1000)")
        when = datetime.fromtimestamp(number, UTC)
    elif isinstance(raw, str):
        if DATE_ONLY_RE.fullmatch(raw):
            raise ValueError("is a date alone, which is ambiguous; send a date-time with offset")
        try:
            when = datetime.fromisoformat(raw)
        except ValueError:
            raise ValueError("is not a valid ISO 8601 date-time") from None
        if when.tzinfo is None:
            raise ValueError(
                "has no UTC offset; add one (e.g. Z or +02:00), a local time is ambiguous"
            )
        when = when.astimezone(UTC)
    else:
        raise ValueError("must be Unix seconds (number) or an ISO 8601 string")
    if when < window.oldest:
        raise ValueError(
            f"is older than the accepted window (not before {window.oldest.isoformat()})"
        )
    if when > window.newest:
        raise ValueError(f"is too far in the future (not after {window.newest.isoformat()})")
    return when


def tag_value_ok(value: str) -> bool:
    """1-191 characters, no control character, line separator or lone surrogate."""
    if not _TAG_VALUE_RE.fullmatch(value):
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: PostgreSQL could not store it
        return False
    return True


def name_ok(name: str) -> bool:
    """A metric name as stored: NAME_RE matched whole (a `$` alone would allow a final newline)."""
    return NAME_RE.fullmatch(name) is not None


def tag_key_ok(key: str) -> bool:
    """A tag key: a letter or `_`, then up to 63 of letters, digits and `_ . -`."""
    return TAG_KEY_RE.fullmatch(key) is not None


def value_ok(value: float) -> bool:
    """A point's value: finite and within ±VALUE_MAX (False for NaN and the infinities).

    The one range check of every way points arrive, protocols and derived increments included.
    """
    return -VALUE_MAX <= value <= VALUE_MAX


def parse_tags(raw: Any) -> dict[str, str]:
    if not isinstance(raw, dict):
        raise ValueError("must be an object of string keys to string values")
    if len(raw) > TAGS_MAX:
        raise ValueError(f"may hold at most {TAGS_MAX} tags, not {len(raw)}")
    for key, value in raw.items():
        if not tag_key_ok(key):
            raise ValueError(f"key {key[:70]!r} must match [A-Za-z_][A-Za-z0-9_.-]{{0,63}}")
        if not isinstance(value, str):
            raise ValueError(f"value of {key!r} must be a string")
        if not tag_value_ok(value):
            raise ValueError(
                f"value of {key!r} must be 1-{TAG_VALUE_MAX} characters, none of them a control "
                "character"
            )
    return dict(raw)


def parse_point(
    raw: Any,
    *,
    kind: str | None,
    now: datetime,
    index: int | None = None,
    window: Window | None = None,
) -> PointInput:
    """Validate one point; raise PointErrors listing every bad field.

    `kind` is the endpoint's metric type, or None in a batch, where each point names its type.
    """
    errors: list[dict[str, Any]] = []

    def fail(field: str | None, message: str) -> None:
        error: dict[str, Any] = {"field": field, "message": message}
        if index is not None:
            error = {"index": index, **error}
        errors.append(error)

    if not isinstance(raw, dict):
        fail(None, "a point must be a JSON object")
        raise PointErrors(errors)
    allowed = POINT_FIELDS if kind else BATCH_POINT_FIELDS
    for unknown in sorted(set(raw) - allowed):
        fail(unknown, "unknown field")
    point_type = kind
    if kind is None:
        point_type = raw.get("type")
        if not isinstance(point_type, str) or point_type not in POINT_TYPES:
            fail("type", "is required: 'counter' or 'value'")
    name = raw.get("name")
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        if name is None:
            fail("name", "is required")
        elif not isinstance(name, str):
            fail("name", "must be a string")
        else:
            fail("name", f"must be 1-{NAME_MAX} characters from letters, digits and _ . - : /")
    value = 1.0
    if "value" in raw:
        try:
            value = parse_value(raw["value"])
        except ValueError as exc:
            fail("value", str(exc))
    elif point_type == VALUE:
        fail("value", "is required for a value metric")
    when = now
    if raw.get("timestamp") is not None:
        try:
            when = parse_timestamp(raw["timestamp"], now=now, window=window)
        except ValueError as exc:
            fail("timestamp", str(exc))
    tags: dict[str, str] = {}
    if raw.get("tags") is not None:
        try:
            tags = parse_tags(raw["tags"])
        except ValueError as exc:
            fail("tags", str(exc))
    if errors:
        raise PointErrors(errors)
    return PointInput(type=point_type, name=name, value=value, timestamp=when, tags=tags)
