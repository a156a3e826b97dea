"""What the OTLP and remote-write endpoints share: names and tags made to the service's rules, the
request's points screened, and one transaction storing value points and cumulative increments.

Those protocols store what they can and report the rest (OTLP's partial success, remote write's
400 after the valid samples), so unlike the JSON batch endpoint a bad point does not fail the
request: `Intake` collects the points and the refusals, each tied to the wire item it came from
(a data point, a series) so that a refusal is counted once per item.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction

from metrics import caches
from metrics.models import Metric, MetricType
from metrics.points import NAME_MAX, TAG_KEY_RE, VALUE_MAX, parse_tags
from metrics.services import MetricTypeConflict, PointInput, SeriesLimitExceeded, points_ingest

from .cumulative import CumulativeObservation, streams_advance

_NAME_CHARS = re.compile(r"[^A-Za-z0-9_.\-:/]")
_KEY_CHARS = re.compile(r"[^A-Za-z0-9_.-]")
# A write that keeps failing on a race (a metric created with the other type meanwhile, a series
# limit reached) is retried without the offending metric this many times.
ATTEMPTS = 3
MESSAGES_KEPT = 5


class Refused(ValueError):
    """A wire item that cannot be stored; its message says why."""


def clean_name(raw: str, suffix: str = "") -> str:
    """The metric name for `raw`: characters outside the service's charset become `_`."""
    name = _NAME_CHARS.sub("_", raw) + suffix
    if not raw:
        raise Refused("a metric needs a name")
    if len(name) > NAME_MAX:
        raise Refused(f"metric name {name[:60]!r}… is longer than {NAME_MAX} characters")
    return name


def clean_tags(raw: Mapping[str, str]) -> dict[str, str]:
    """Tags from attributes or labels: keys made to the tag-key charset, empty values dropped
    (an empty label is an absent one in Prometheus), at most 10 of them.

    The result is shared between calls with the same input (requests repeat a few attribute
    sets across many metrics): it must not be modified.
    """
    return _clean_tags(tuple(raw.items()))


@functools.lru_cache(maxsize=16384)
def _clean_tags(items: tuple[tuple[str, str], ...]) -> dict[str, str]:
    tags: dict[str, str] = {}
    for key, value in items:
        if value == "":
            continue
        clean = _KEY_CHARS.sub("_", key)
        if not clean or not (clean[0].isascii() and (clean[0].isalpha() or clean[0] == "_")):
            clean = "_" + clean
        if not TAG_KEY_RE.fullmatch(clean):
            raise Refused(f"attribute key {key[:70]!r} is longer than 64 characters")
        tags[clean] = value
    try:
        return parse_tags(tags)
    except ValueError as exc:
        raise Refused(f"tags {exc}") from None


def clean_value(raw: float) -> float:
    if not math.isfinite(raw):
        raise Refused(f"value {raw} is not finite")
    if abs(raw) > VALUE_MAX:
        raise Refused(f"value {raw:g} lies beyond ±1e15")
    return float(raw)


@dataclass
class Intake:
    """The points of one request, each tagged with the wire item (its index) it came from."""

    points: list[tuple[int, PointInput]] = field(default_factory=list)
    observations: list[tuple[int, CumulativeObservation]] = field(default_factory=list)
    refused_items: set[int] = field(default_factory=set)
    messages: list[str] = field(default_factory=list)
    refusals: int = 0

    def refuse(self, item: int, message: str) -> None:
        if item not in self.refused_items:
            self.refused_items.add(item)
            self.refusals += 1
        if len(self.messages) < MESSAGES_KEPT:
            self.messages.append(message)

    def message(self) -> str:
        more = self.refusals - len(self.messages)
        return "; ".join(self.messages) + (f"; and {more} more" if more > 0 else "")


@dataclass(frozen=True)
class Stored:
    points: int
    refused: int  # wire items (data points, series) of which something was refused
    message: str


def intake_store(*, intake: Intake) -> Stored:
    """Store what the intake holds that can be stored; report the rest.

    Points whose metric exists with the other type (one query), or is given two types in this
    request (the first wins), are refused up front. Cumulative observations become increments
    (`streams_advance`) and everything is written by `points_ingest` in one transaction. Should
    a concurrent write still make it fail (a metric created meanwhile with the other type, a
    series limit reached), the write is tried again without that metric.
    """
    _refuse_type_conflicts(intake)
    excluded: set[str] = set()
    for attempt in range(ATTEMPTS):
        points = [(i, p) for i, p in intake.points if p.name not in excluded]
        observations = [(i, o) for i, o in intake.observations if o.name not in excluded]
        try:
            with transaction.atomic():
                advance = streams_advance(observations=[o for _, o in observations])
                stored = points_ingest(points=[p for _, p in points] + advance.increments)
        except (MetricTypeConflict, SeriesLimitExceeded) as exc:
            if isinstance(exc, MetricTypeConflict):
                names = {e["name"] for e in exc.errors or ()} - excluded
                reason = "exists with the other type"
            else:
                names = {exc.extra["metric"]} - excluded
                reason = f"already has its limit of {exc.extra['limit']} tag sets"
            if not names or attempt == ATTEMPTS - 1:
                raise
        else:
            item_of = {id(o): i for i, o in observations}
            for observation, message in advance.refused:
                intake.refuse(item_of[id(observation)], f"{observation.name}: {message}")
            return Stored(stored, intake.refusals, intake.message())
        excluded |= names
        for name in sorted(names):
            for item in _items_of(intake, name):
                intake.refuse(item, f"metric {name!r} {reason}")
    raise AssertionError("unreachable")  # the loop returns or raises


def _items_of(intake: Intake, name: str) -> list[int]:
    return [i for i, p in intake.points if p.name == name] + [
        i for i, o in intake.observations if o.name == name
    ]


def _refuse_type_conflicts(intake: Intake) -> None:
    wanted: dict[str, str] = {}
    for _, point in intake.points:
        wanted.setdefault(point.name, point.type)
    for _, observation in intake.observations:
        wanted.setdefault(observation.name, MetricType.COUNTER)
    existing = _existing_types(wanted)
    kept_points = []
    for item, point in intake.points:
        metric_type = existing.get(point.name, wanted[point.name])
        if metric_type != point.type:
            intake.refuse(item, f"metric {point.name!r} is a {metric_type}, not a {point.type}")
        else:
            kept_points.append((item, point))
    kept_observations = []
    for item, observation in intake.observations:
        metric_type = existing.get(observation.name, wanted[observation.name])
        if metric_type != MetricType.COUNTER:
            intake.refuse(item, f"metric {observation.name!r} is a {metric_type}, not a counter")
        else:
            kept_observations.append((item, observation))
    intake.points = kept_points
    intake.observations = kept_observations


def _existing_types(wanted: Mapping[str, str]) -> dict[str, Any]:
    known = {name: caches.metric_cached(name) for name in wanted}
    found = {name: ref.type for name, ref in known.items() if ref is not None}
    missing = [name for name, ref in known.items() if ref is None]
    if missing:
        found |= dict(Metric.objects.filter(name__in=missing).values_list("name", "type"))
    return found
