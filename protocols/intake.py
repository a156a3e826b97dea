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
from collections.abc import Callable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field

from metrics.models import MetricType
from metrics.points import NAME_MAX, name_ok, parse_tags, tag_key_ok, value_ok
from metrics.services import (
    NAMESPACE,
    SERIES_LIMIT,
    TWO_TYPES,
    PointInput,
    Refusal,
    points_ingest_partial,
)

from .cumulative import Advance, CumulativeObservation, streams_advance

_NAME_CHARS = re.compile(r"[^A-Za-z0-9_.\-:/]")
_KEY_CHARS = re.compile(r"[^A-Za-z0-9_.-]")
MESSAGES_KEPT = 5


class Refused(ValueError):
    """A wire item that cannot be stored; its message says why."""


def clean_name(raw: str, suffix: str = "") -> str:
    """The metric name for `raw`: characters outside the service's charset become `_`."""
    name = _NAME_CHARS.sub("_", raw) + suffix
    if not raw:
        raise Refused("a metric needs a name")
    if not name_ok(name):
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
        if not tag_key_ok(clean):
            raise Refused(f"attribute key {key[:70]!r} is longer than 64 characters")
        tags[clean] = value
    try:
        return parse_tags(tags)
    except ValueError as exc:
        raise Refused(f"tags {exc}") from None


def clean_value(raw: float) -> float:
    if not math.isfinite(raw):
        raise Refused(f"value {raw} is not finite")
    if not value_ok(raw):
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


def intake_store(*, intake: Intake, allowed: Callable[[str], bool] | None = None) -> Stored:
    """Store what the intake holds that can be stored; report the rest.

    Cumulative observations become increments (`streams_advance`) inside the transaction that
    writes every point, so the stream rows stay locked until the points commit; what the
    service refuses (a metric of the other type, or given both types here, a series limit) is
    reported against the wire items it came from (`points_ingest_partial`), and so is what
    lies outside the key's namespaces (`allowed`, apikeys.namespaces).
    """
    points = [point for _, point in intake.points]
    observations = intake.observations
    advances: list[Advance] = []

    def derive(excluded: AbstractSet[str]) -> list[PointInput]:
        advance = streams_advance(
            observations=[o for _, o in observations if o.name not in excluded]
        )
        advances[:] = [advance]  # a write redone advances the streams again from the start
        return advance.increments

    result = points_ingest_partial(
        points=points,
        derived=dict.fromkeys((o.name for _, o in observations), MetricType.COUNTER),
        derive=derive if observations else None,
        allowed=allowed,
    )
    for index, refusal in result.refused:
        item, point = intake.points[index]
        intake.refuse(item, _message(refusal, point.type))
    for item, observation in observations:
        refusal = result.derived_refused.get(observation.name)
        if refusal is not None:
            intake.refuse(item, _message(refusal, MetricType.COUNTER))
    if advances:
        item_of = {id(o): i for i, o in observations}
        for observation, message in advances[0].refused:
            intake.refuse(item_of[id(observation)], f"{observation.name}: {message}")
    return Stored(result.stored, intake.refusals, intake.message())


def _message(refusal: Refusal, point_type: str) -> str:
    name = refusal.name
    if refusal.reason == NAMESPACE:
        return f"metric {name!r} is outside this key's namespaces"
    if refusal.reason == SERIES_LIMIT:
        return f"metric {name!r} already has its limit of {refusal.limit} tag sets"
    if refusal.reason == TWO_TYPES:
        return f"metric {name!r} is sent as a counter and as a value; neither is stored"
    if refusal.metric_type is None:
        return f"metric {name!r} exists with the other type"
    return f"metric {name!r} is a {refusal.metric_type}, not a {point_type}"
