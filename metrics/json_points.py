"""A batch body of JSON points, decoded and checked quickly, in agreement with `metrics.points`.

The rules of a point live in `metrics.points` (`parse_point` names every bad field). Here is the
fast path for a body of up to BATCH_MAX points: msgspec decodes the usual shape straight into
records (`batch_decode`), and `_FastBatch` lets the plainly valid points through with the rules'
own constants, caching the names, tag sets and times that repeat within a body. Anything unusual
is handed to `parse_point`, so an error is always the full check's. A property test compares the
two paths on edge cases (tests/metrics/test_ingest_api.py).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec

from .points import (
    BATCH_MAX,
    BATCH_POINT_FIELDS,
    NAME_RE,
    POINT_TYPES,
    VALUE,
    VALUE_MAX,
    PointErrors,
    Window,
    parse_point,
    parse_tags,
)
from .services import PointInput


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
