"""The rules of a point, shared by every way points arrive (JSON, protocols, the outbox).

Validation is plain Python rather than DRF field machinery: a 1000-point batch is validated in
about a millisecond instead of tens, and every invalid point is reported with its index, field
and message. `metrics.serializers` wraps these rules for the OpenAPI schema.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
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


class _PointRecord(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """A batch point as `batch_decode` reads it; UNSET where the JSON had no such field."""

    type: str
    name: str
    value: float | msgspec.UnsetType = msgspec.UNSET
    timestamp: float | str | msgspec.UnsetType | None = msgspec.UNSET
    tags: dict[str, str] | msgspec.UnsetType | None = msgspec.UNSET

    def plain(self) -> dict[str, Any]:
        """The point as the generic JSON decoder would have made it, for the full check."""
        return {
            field: getattr(self, field)
            for field in self.__struct_fields__
            if getattr(self, field) is not msgspec.UNSET
        }


class BatchRecord(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    points: list[_PointRecord]


_BATCH_DECODER = msgspec.json.Decoder(BatchRecord)


def batch_decode(raw: bytes) -> BatchRecord | None:
    """A batch body read straight into records, in C, where its shape is the usual one: an
    object of `points` whose items have the five fields with JSON types that can be valid.
    Anything else (a wrong type, an unknown field, a number out of range, NaN, bad UTF-8, a
    lone surrogate) is None, and the body then goes through the generic decoder and
    `parse_batch`'s full checks, which name every problem; the rules themselves are applied to
    the records by `parse_batch` all the same. Twice as fast as `json.loads`, and the records
    are cheaper to check than dicts."""
    try:
        return _BATCH_DECODER.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


def parse_batch(raw: Any, *, now: datetime) -> list[PointInput]:
    """Validate a batch body (plain JSON data, or the records of `batch_decode`); raise
    PointErrors listing every invalid point, not only the first."""
    if isinstance(raw, BatchRecord):
        return _parse_points(raw.points, now=now, records=True)
    if not isinstance(raw, dict):
        raise PointErrors([{"field": None, "message": "the body must be a JSON object"}])
    unknown = sorted(set(raw) - {"points"})
    if unknown:
        raise PointErrors([{"field": name, "message": "unknown field"} for name in unknown])
    points = raw.get("points")
    if not isinstance(points, list):
        raise PointErrors([{"field": "points", "message": "is required: a list of points"}])
    return _parse_points(points, now=now, records=False)


def _parse_points(points: list, *, now: datetime, records: bool) -> list[PointInput]:
    """The points of a batch, JSON dicts or (`records`) `batch_decode`'s records."""
    if not 1 <= len(points) <= BATCH_MAX:
        raise PointErrors(
            [
                {
                    "field": "points",
                    "message": f"must hold 1 to {BATCH_MAX} points, not {len(points)}",
                }
            ]
        )
    parsed: list[PointInput] = []
    errors: list[dict[str, Any]] = []
    window = Window.around(now)
    fast = _FastBatch(now, window)
    if records:
        quick, all_valid = fast.records(points)
        if all_valid:
            return quick  # type: ignore[return-value] - no None in it
    else:
        quick = map(fast.point, points)
    for index, (item, point) in enumerate(zip(points, quick, strict=True)):
        if point is not None:
            parsed.append(point)
            continue
        # Not plainly valid: the full check names every bad field.
        raw = item.plain() if records else item
        try:
            parsed.append(parse_point(raw, kind=None, now=now, index=index, window=window))
        except PointErrors as exc:
            errors.extend(exc.errors)
    if errors:
        raise PointErrors(errors)
    return parsed


class _FastBatch:
    """The common case of a batch, checked quickly: points that are plainly valid, with names and
    tag sets that repeat (each distinct one is checked once per batch). Anything unusual returns
    None and gets the full check, so the rules themselves live only in `parse_point`."""

    def __init__(self, now: datetime, window: Window) -> None:
        self.now = now
        self.oldest = window.oldest.timestamp()
        self.newest = window.newest.timestamp()
        self.names: dict[str, bool] = {}
        self.tags: dict[tuple, dict[str, str] | None] = {}
        # An agent stamps a flush once: each distinct Unix time becomes a datetime once.
        self.times: dict[float, datetime] = {}

    def records(self, records: list[_PointRecord]) -> tuple[list[PointInput | None], bool]:
        """`point` for each record of `batch_decode` (whose JSON types are checked already), in
        one loop with the batch's caches at hand, and whether all of them were plainly valid.
        The points are built with tuple.__new__, which skips the named tuple's Python __new__."""
        names, times, tag_sets = self.names, self.times, self.tags
        now, oldest, newest = self.now, self.oldest, self.newest
        unset = msgspec.UNSET
        out: list[PointInput | None] = []
        append = out.append
        point = tuple.__new__
        valid_all = True
        for p in records:
            point_type = p.type
            name = p.name
            valid = names.get(name)
            if valid is None:
                valid = names[name] = NAME_RE.fullmatch(name) is not None
            if not valid or point_type not in POINT_TYPES:
                append(None)
                valid_all = False
                continue
            value = p.value
            if value is unset:
                if point_type == VALUE:
                    append(None)
                    valid_all = False
                    continue
                value = 1.0
            elif not -VALUE_MAX <= value <= VALUE_MAX:  # False for NaN as well
                append(None)
                valid_all = False
                continue
            stamp = p.timestamp
            if stamp is None or stamp is unset:
                when = now
            elif type(stamp) is float:
                # Cached only once inside the window, which is the batch's own.
                when = times.get(stamp)
                if when is None:
                    # Strictly inside: the exact edges are left to the full check.
                    if not oldest < stamp < newest:
                        append(None)
                        valid_all = False
                        continue
                    when = times[stamp] = datetime.fromtimestamp(stamp, UTC)
            else:
                when = self._when_text(stamp)
                if when is None:
                    append(None)
                    valid_all = False
                    continue
            raw_tags = p.tags
            if raw_tags is None or raw_tags is unset:
                tags: dict[str, str] | None = {}
            else:
                key = tuple(raw_tags.items())
                tags = tag_sets.get(key, unset)
                if tags is unset:
                    tags = tag_sets[key] = _tags_or_none(raw_tags)
                if tags is None:
                    append(None)
                    valid_all = False
                    continue
            append(point(PointInput, (point_type, name, value, when, tags)))
        return out, valid_all

    def _name_ok(self, name: str) -> bool:
        valid = self.names.get(name)
        if valid is None:
            valid = self.names[name] = NAME_RE.fullmatch(name) is not None
        return valid

    def _when(self, stamp: float) -> datetime | None:
        # Strictly inside: the exact edges are left to the full check's datetime arithmetic.
        if not self.oldest < stamp < self.newest:
            return None
        when = self.times.get(stamp)
        if when is None:
            when = self.times[stamp] = datetime.fromtimestamp(stamp, UTC)
        return when

    def _when_text(self, stamp: str) -> datetime | None:
        try:
            when = datetime.fromisoformat(stamp)
        except ValueError:
            return None
        if when.tzinfo is None:
            return None
        when = when.astimezone(UTC)
        return when if self.oldest < when.timestamp() < self.newest else None

    def _tags(self, raw: dict) -> dict[str, str] | None:
        """Each distinct tag set checked once per batch; the same dict for its points."""
        items = tuple(raw.items())
        try:
            return self.tags[items]
        except KeyError:
            tags = self.tags[items] = _tags_or_none(raw)
            return tags

    def point(self, raw: Any) -> PointInput | None:
        if type(raw) is not dict or not BATCH_POINT_FIELDS.issuperset(raw):
            return None
        point_type = raw.get("type")
        name = raw.get("name")
        if type(point_type) is not str or point_type not in POINT_TYPES or type(name) is not str:
            return None
        if not self._name_ok(name):
            return None
        value = raw.get("value")
        if value is None:
            if point_type == VALUE or "value" in raw:
                return None
            value = 1.0
        elif type(value) is float or type(value) is int:
            if not -VALUE_MAX <= value <= VALUE_MAX:  # False for NaN as well
                return None
            value = float(value)
        else:
            return None
        stamp = raw.get("timestamp")
        if stamp is None:
            if "timestamp" in raw:
                return None
            when = self.now
        elif type(stamp) is float or type(stamp) is int:
            when = self._when(stamp)
        elif type(stamp) is str:
            when = self._when_text(stamp)
        else:
            return None
        if when is None:
            return None
        raw_tags = raw.get("tags")
        if raw_tags is None:
            if "tags" in raw:
                return None
            tags: dict[str, str] | None = {}
        elif type(raw_tags) is dict:
            try:
                tags = self._tags(raw_tags)
            except TypeError:  # an unhashable value: not a string, so not valid
                return None
            if tags is None:
                return None
        else:
            return None
        return PointInput(point_type, name, value, when, tags)


def _tags_or_none(raw: dict) -> dict[str, str] | None:
    try:
        return parse_tags(raw)
    except ValueError:
        return None
