"""InfluxDB line protocol: a request's body read, its lines mapped to points and stored.

The grammar and its parser are `protocols.line_protocol`: a body with a line outside the
grammar stores nothing (400, the syntax error naming the line's number). Well-formed points
that the service refuses (a name or tag outside its rules, a timestamp outside the accepted
window, a boolean or string field, a metric that is a counter) are dropped one by one, and the
others are stored (422, "partial write").

Mapping: a field named `value` is a point of metric `<measurement>`, any other field a point of
`<measurement>.<field>`; the tag set is the point's tags; every point is of type `value`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from glowing_fiesta.exceptions import Problem
from metrics.models import MetricType
from metrics.points import NAME_MAX, Window, name_ok, parse_tags, value_ok
from metrics.services import NAMESPACE, SERIES_LIMIT, PointInput, points_ingest_partial

from .line_protocol import Line, LineSyntaxError, quoted

logger = logging.getLogger(__name__)

# The precisions each API accepts, of `line_protocol.PRECISIONS`: InfluxDB 2's names, and 1.x's
# single letters too.
PRECISIONS_V2 = ("ns", "us", "ms", "s")
PRECISIONS_V1 = ("n", "ns", "u", "us", "ms", "s", "m", "h")
# Reasons listed in a partial-write message; the count covers them all.
REASONS_SHOWN = 5

VALUE = MetricType.VALUE.value


# --- errors ----------------------------------------------------------------------------------


class NoPoints(Problem):
    status = 400
    slug = "no-points"
    title = "No points"


# --- the body --------------------------------------------------------------------------------


def body_text(body: bytes) -> str:
    """The body as UTF-8; a byte that is not UTF-8 is a syntax error on its line."""
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = body.count(b"\n", 0, exc.start) + 1
        raise LineSyntaxError(line, f"invalid UTF-8 at byte {exc.start}") from None


# --- points ----------------------------------------------------------------------------------

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def timestamp_datetime(nanoseconds: int) -> datetime:
    """Nanoseconds since the epoch as an aware datetime (microseconds: finer digits dropped)."""
    return _EPOCH + timedelta(microseconds=nanoseconds // 1000)


@dataclass(frozen=True)
class Dropped:
    """Points of one line that were not stored, and why."""

    line: int
    points: int
    reason: str


@dataclass(frozen=True)
class Mapped:
    points: list[PointInput]
    lines: list[int]  # the line number of each point
    dropped: list[Dropped]


def lines_points(lines: Iterable[Line], *, now: datetime) -> Mapped:
    """The points the lines carry, and the points (by line) that the service's rules refuse."""
    window = Window.around(now)
    points: list[PointInput] = []
    origins: list[int] = []
    dropped: list[Dropped] = []
    tags_checked: dict[tuple[tuple[str, str], ...], tuple[dict[str, str], str | None]] = {}
    # measurement -> field key -> (metric name, or None when refused; refusal reason)
    names: dict[str, dict[str, tuple[str | None, str | None]]] = {}
    times: dict[int, datetime] = {}
    for line in lines:
        checked = tags_checked.get(line.tags)
        if checked is None:
            checked = tags_checked[line.tags] = _tags_check(line.tags)
        tags, tags_error = checked
        if tags_error is not None:
            dropped.append(Dropped(line.number, len(line.fields), tags_error))
            continue
        when = now
        if line.timestamp is not None:
            when = times.get(line.timestamp)  # type: ignore[assignment]
            if when is None:
                when = times[line.timestamp] = timestamp_datetime(line.timestamp)
            if when < window.oldest:
                reason = f"timestamp is older than the accepted window (not before {window.oldest.isoformat()})"
                dropped.append(Dropped(line.number, len(line.fields), reason))
                continue
            if when > window.newest:
                reason = (
                    f"timestamp is too far in the future (not after {window.newest.isoformat()})"
                )
                dropped.append(Dropped(line.number, len(line.fields), reason))
                continue
        of_measurement = names.get(line.measurement)
        if of_measurement is None:
            of_measurement = names[line.measurement] = {}
        refused: list[str] = []
        for key, kind, value in line.fields:
            named = of_measurement.get(key)
            if named is None:
                named = of_measurement[key] = _name_check(line.measurement, key)
            name, name_error = named
            if name is None:
                refused.append(name_error)  # type: ignore[arg-type]
            elif kind == "boolean" or kind == "string":
                refused.append(f"field {quoted(key)} is a {kind}; only numbers are stored")
            elif value_ok(value):  # type: ignore[arg-type]
                points.append(PointInput(VALUE, name, float(value), when, tags))
                origins.append(line.number)
            else:
                refused.append(f"value of field {quoted(key)} must lie within ±1e15")
        if refused:
            dropped.append(Dropped(line.number, len(refused), "; ".join(refused)))
    return Mapped(points, origins, dropped)


def _tags_check(tags: tuple[tuple[str, str], ...]) -> tuple[dict[str, str], str | None]:
    try:
        return parse_tags(dict(tags)), None
    except ValueError as exc:
        return {}, f"tags {exc}"


def _name_check(measurement: str, key: str) -> tuple[str | None, str | None]:
    """The metric name of a field, or None and why it is refused."""
    name = measurement if key == "value" else f"{measurement}.{key}"
    if name_ok(name):
        return name, None
    return None, (
        f"metric name {name[:60]!r} must be 1-{NAME_MAX} characters from letters, digits "
        "and _ . - : /"
    )


# --- the write ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class WriteResult:
    stored: int
    dropped: list[Dropped]

    @property
    def dropped_points(self) -> int:
        return sum(d.points for d in self.dropped)

    def message(self) -> str:
        """InfluxDB's partial-write message, naming the first few lines and why."""
        shown = sorted(self.dropped, key=lambda d: d.line)[:REASONS_SHOWN]
        reasons = "; ".join(f"line {d.line}: {d.reason}" for d in shown)
        more = "; …" if len(self.dropped) > REASONS_SHOWN else ""
        return f"partial write: dropped {self.dropped_points} points: {reasons}{more}"


def influx_write(
    *, lines: Sequence[Line], now: datetime, allowed: Callable[[str], bool] | None = None
) -> WriteResult:
    """Store the lines' points; drop, line by line, those the service refuses.

    All points are of type value, so the points of a metric that exists as a counter are
    dropped, and so are those of a metric at its series limit: `points_ingest_partial` says
    which, and the lines they came from are named. So are the points outside the key's
    namespaces (`allowed`, apikeys.namespaces).
    """
    mapped = lines_points(lines, now=now)
    dropped = list(mapped.dropped)
    result = points_ingest_partial(points=mapped.points, allowed=allowed)
    if result.retries:
        logger.info("influx write retried without refused metrics", extra={"count": result.retries})
    per_line: dict[tuple[int, str, str], int] = {}
    for index, refusal in result.refused:
        if refusal.reason == SERIES_LIMIT:
            reason = refusal.detail
        elif refusal.reason == NAMESPACE:
            reason = f"metric {refusal.name!r} is outside this token's namespaces"
        else:
            reason = f"metric {refusal.name!r} is a counter; line protocol writes values"
        key = (mapped.lines[index], refusal.name, reason)
        per_line[key] = per_line.get(key, 0) + 1
    dropped.extend(Dropped(line, count, reason) for (line, _, reason), count in per_line.items())
    return WriteResult(result.stored, dropped)


__all__ = [
    "PRECISIONS_V1",
    "PRECISIONS_V2",
    "WriteResult",
    "body_text",
    "influx_write",
    "lines_points",
]
