"""StatsD and DogStatsD: lines parsed, and one flush interval aggregated into PointInputs.

A line is `name:value|type[|@rate][|#tag:value,tag2]`; a datagram holds one or more lines
separated by `\\n`. Types, as Etsy's statsd and DogStatsD define them:

- `c` counter: value ÷ sample rate, summed per name and tag set over the flush interval, stored
  as one counter point;
- `g` gauge: the last value in the interval, one value point; a leading `+` or `-` adjusts the
  last known value (kept across flushes, 0 when none is known) instead of setting it;
- `ms`, `h`, `d` timers, histograms and distributions: every sample is a value point, so the
  query API's avg, max and percentiles are exact rather than pre-computed;
- `s` set: the number of distinct members seen in the interval, one value point.

DogStatsD tags (`|#key:value,flag`) become tags; a tag without a value gets `true`. The sample
rate matters only to counters (the others are not scaled, as in Etsy's statsd). Other DogStatsD
fields (`|c:` container id, `|e:`, `|card:`, `|T` timestamp) are accepted and ignored: every
point takes the flush time. Events (`_e{…}`) and service checks (`_sc|…`) are not metrics and
are refused like any invalid line.

Names are cleaned as Etsy's statsd does (runs of white space become `_`, `/` becomes `-`, other
characters outside the service's name charset, `metrics.points.NAME_RE`, are dropped); a line that still cannot be stored
(no name left, a bad value, a tag outside the service's rules) is counted and logged at most once
a minute per name. Nothing here raises on input: the UDP server must never die of a datagram.

The `Aggregator` holds one interval's state, bounded in series and samples; storing its flushes
is `protocols.statsd_flush`.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

from metrics.models import MetricType
from metrics.points import (
    NAME_MAX,
    TAG_VALUE_MAX,
    TAGS_MAX,
    name_ok,
    tag_key_ok,
    tag_value_ok,
    value_ok,
)
from metrics.services import PointInput

logger = logging.getLogger(__name__)

COUNTER = MetricType.COUNTER.value
VALUE = MetricType.VALUE.value
TYPES = frozenset({"c", "g", "ms", "h", "d", "s"})
TIMER_TYPES = frozenset({"ms", "h", "d"})
# Gauge values remembered across flushes, for deltas; the least recently set are forgotten first.
GAUGE_MEMORY = 100_000
# An invalid line is logged at most this often per name (the count of the others is kept).
LOG_EVERY_SECONDS = 60.0
# Invalid-line records logged per minute in all, whatever the names (a flood of garbage).
LOG_PER_MINUTE = 100
# Names whose last log time is remembered; past this, the oldest are forgotten.
LOG_MEMORY = 10_000

# Etsy's statsd (stats.js, sanitizeKeyName), with the service's charset (NAME_RE) for the last
# step: `:` and `/` are in that charset, but `:` ends a StatsD name and `/` is turned into `-`.
_SPACES = re.compile(r"\s+")
_OUTSIDE = re.compile(r"[^A-Za-z0-9_.\-]")
_CLEAN = re.compile(r"[A-Za-z0-9_.\-]{1,%d}" % NAME_MAX)  # noqa: UP031 - a regex, not a message
# A plain decimal number; float() alone would also take "nan", "1_000", " 1" or Arabic digits.
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")

Tags = tuple[tuple[str, str], ...]
Key = tuple[str, Tags]


class InvalidLine(ValueError):
    """A line that cannot become a point.

    `name` is the metric it was about ("" when no name could be read), the key of the
    once-a-minute log; `line` is an excerpt for that log.
    """

    def __init__(self, message: str, name: str = "", line: str = "") -> None:
        super().__init__(message)
        self.name = name
        self.line = line


@dataclass(frozen=True, slots=True)
class Sample:
    """One parsed line. `value` is already divided by the sample rate for counters."""

    kind: str
    name: str
    value: float
    tags: Tags = ()
    delta: bool = False
    member: str | None = None


def clean_name(raw: str) -> str:
    """The StatsD name as the service stores it, or InvalidLine when nothing storable is left."""
    if _CLEAN.fullmatch(raw):
        return raw
    name = _OUTSIDE.sub("", _SPACES.sub("_", raw).replace("/", "-"))
    if not name:
        raise InvalidLine("the name is empty once cleaned", "", raw[:80])
    if not name_ok(name):
        raise InvalidLine(f"the name is longer than {NAME_MAX} characters", name[:80])
    return name


def _number(raw: str, name: str) -> float:
    if not _NUMBER.fullmatch(raw):
        raise InvalidLine(f"value {raw[:40]!r} is not a number", name)
    value = float(raw)
    if not value_ok(value):
        raise InvalidLine(f"value {raw[:40]!r} lies outside ±1e15", name)
    return value


def _rate(raw: str, name: str) -> float:
    if not _NUMBER.fullmatch(raw):
        raise InvalidLine(f"sample rate {raw[:40]!r} is not a number", name)
    rate = float(raw)
    if not 0 < rate <= 1:
        raise InvalidLine(f"sample rate {raw[:40]!r} must lie in (0, 1]", name)
    return rate


def _tags(raw: str, name: str, tags: dict[str, str]) -> None:
    for item in raw.split(","):
        if not item:
            continue
        key, sep, value = item.partition(":")
        if not sep:
            value = "true"
        if not tag_key_ok(key):
            raise InvalidLine(
                f"tag key {key[:70]!r} must match [A-Za-z_][A-Za-z0-9_.-]{{0,63}}", name
            )
        if not tag_value_ok(value):
            raise InvalidLine(
                f"value of tag {key!r} must be 1-{TAG_VALUE_MAX} characters, none of them a "
                "control character",
                name,
            )
        if tags.setdefault(key, value) != value:
            raise InvalidLine(f"tag {key!r} is given twice with different values", name)
    if len(tags) > TAGS_MAX:
        raise InvalidLine(f"a point may carry at most {TAGS_MAX} tags, not {len(tags)}", name)


def _shape(raw_name: str, meta: str) -> tuple[str, str, Tags, float]:
    """(type, clean name, sorted tags, sample rate) of a line's name and `type|…` part."""
    name = clean_name(raw_name)
    fields = meta.split("|")
    kind = fields[0]
    if kind not in TYPES:
        raise InvalidLine(f"unknown type {kind[:10]!r} (c, g, ms, h, d or s)", name)
    rate = 1.0
    tags: dict[str, str] = {}
    for extra in fields[1:]:
        if extra.startswith("@"):
            rate = _rate(extra[1:], name)
        elif extra.startswith("#"):
            _tags(extra[1:], name, tags)
        # Other DogStatsD fields (c: container id, e: external data, card:, T timestamp) are
        # about the sender or its clock, not the point: ignored.
    return kind, name, tuple(sorted(tags.items())), rate


# Senders repeat a few thousand name-and-tags shapes with new values: each shape is parsed once
# (cleaning, tag rules, sorting are most of a line's cost). Errors are kept as (message, name),
# never as exception objects, whose tracebacks would grow with every raise.
_shapes: dict[tuple[str, str], tuple | tuple[str, str, None]] = {}
SHAPE_CACHE = 50_000


def parse_line(line: str) -> Sample:
    """Parse one line; raise InvalidLine saying why it cannot be stored."""
    if line.startswith(("_e{", "_sc|")):
        raise InvalidLine("DogStatsD events and service checks are not metrics", "", line[:80])
    raw_name, sep, rest = line.partition(":")
    if not sep:
        raise InvalidLine("no ':' between the name and the value", "", line[:80])
    raw_value, bar, meta = rest.partition("|")
    if not bar:
        raise InvalidLine("no '|type' after the value", clean_name(raw_name))
    key = (raw_name, meta)
    shape = _shapes.get(key)
    if shape is None:
        try:
            shape = _shape(raw_name, meta)
        except InvalidLine as exc:
            shape = (str(exc), exc.name, None)
        if len(_shapes) >= SHAPE_CACHE:
            _shapes.clear()
        _shapes[key] = shape
    if len(shape) == 3:
        raise InvalidLine(shape[0], shape[1])
    kind, name, tags, rate = shape
    if kind == "s":
        if not raw_value:
            raise InvalidLine("a set member may not be empty", name)
        return Sample("s", name, 0.0, tags, member=raw_value)
    value = _number(raw_value, name)
    if kind == "c":
        return Sample("c", name, value / rate, tags)
    if kind == "g":
        return Sample("g", name, value, tags, delta=raw_value[:1] in ("+", "-"))
    return Sample(kind, name, value, tags)


def split_lines(data: bytes) -> Iterable[str | InvalidLine]:
    """The lines of a datagram, decoded; a line that is not UTF-8 comes out as InvalidLine."""
    try:
        text = data.decode()
    except UnicodeDecodeError:
        for raw in data.split(b"\n"):
            raw = raw.rstrip(b"\r")
            if not raw:
                continue
            try:
                yield raw.decode()
            except UnicodeDecodeError:
                yield InvalidLine("the line is not UTF-8", "", repr(raw[:40]))
        return
    for line in text.split("\n"):
        line = line.rstrip("\r")
        if line:
            yield line


class InvalidLog:
    """Logs an invalid line at most once a minute per name, and at most LOG_PER_MINUTE in all.

    Each record says how many lines of that name went unlogged since the last one; every
    invalid line is counted in the flush's figures regardless.
    """

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._seen: OrderedDict[str, list] = OrderedDict()  # name -> [last logged, unlogged]
        self._window = (-math.inf, 0)  # (start, records logged in it)

    def report(self, error: InvalidLine) -> None:
        now = self.clock()
        entry = self._seen.get(error.name)
        if entry is not None and now - entry[0] < LOG_EVERY_SECONDS:
            entry[1] += 1
            return
        start, logged = self._window
        if now - start >= LOG_EVERY_SECONDS:
            start, logged = now, 0
        if logged >= LOG_PER_MINUTE:
            if entry is not None:
                entry[1] += 1
            return
        self._window = (start, logged + 1)
        unlogged = entry[1] if entry else 0
        self._seen.pop(error.name, None)
        self._seen[error.name] = [now, 0]
        while len(self._seen) > LOG_MEMORY:
            self._seen.popitem(last=False)
        logger.warning(
            "statsd line refused",
            extra={
                "metric": error.name,
                "reason": str(error),
                "line": error.line,
                "not_logged_since": unlogged,
            },
        )


@dataclass
class FlushStats:
    """What one interval received and what was left out of it, for the flush's log line."""

    lines: int = 0
    invalid: int = 0
    series_dropped: int = 0  # distinct new series refused past max_series
    series_dropped_lines: int = 0
    samples_dropped: int = 0  # timer samples and set members past max_samples
    out_of_range: int = 0  # counter sums or gauge values past ±1e15 at flush time


@dataclass
class Flush:
    points: list[PointInput]
    stats: FlushStats


class Aggregator:
    """One flush interval of StatsD state, bounded, turned into PointInputs by `flush`.

    At most `max_series` distinct (type, name, tag set) are held per interval and at most
    `max_samples` timer samples and set members; lines past either bound are counted and dropped.
    Not thread-safe: the UDP server feeds and flushes it from its event loop only.
    """

    def __init__(
        self,
        *,
        max_series: int,
        max_samples: int,
        invalid_log: InvalidLog | None = None,
    ) -> None:
        self.max_series = max_series
        self.max_samples = max_samples
        self.invalid_log = invalid_log or InvalidLog()
        self._gauge_memory: OrderedDict[Key, float] = OrderedDict()
        self.invalid_total = 0
        self._reset()

    def _reset(self) -> None:
        self._counters: dict[Key, float] = {}
        self._gauges: dict[Key, float] = {}
        self._timers: dict[Key, list[float]] = {}
        self._sets: dict[Key, set[int]] = {}
        self._series = 0
        self._samples = 0
        self._dropped_keys: set[tuple[str, Key]] = set()
        self.stats = FlushStats()

    @property
    def series(self) -> int:
        return self._series

    def add_packet(self, data: bytes) -> None:
        """Take in one datagram; never raises."""
        for line in split_lines(data):
            self.stats.lines += 1
            if isinstance(line, InvalidLine):
                self._refuse(line)
                continue
            try:
                sample = parse_line(line)
            except InvalidLine as exc:
                exc.line = exc.line or line[:80]
                self._refuse(exc)
                continue
            self.add(sample)

    def _refuse(self, error: InvalidLine) -> None:
        self.stats.invalid += 1
        self.invalid_total += 1
        self.invalid_log.report(error)

    def _new_series(self, group: str, key: Key) -> bool:
        if self._series < self.max_series:
            self._series += 1
            return True
        self.stats.series_dropped_lines += 1
        # Distinct refused series are counted up to a bound, so a flood cannot grow this set.
        if len(self._dropped_keys) < 10 * self.max_series:
            before = len(self._dropped_keys)
            self._dropped_keys.add((group, key))
            self.stats.series_dropped += len(self._dropped_keys) - before
        return False

    def _new_sample(self) -> bool:
        if self._samples < self.max_samples:
            self._samples += 1
            return True
        self.stats.samples_dropped += 1
        return False

    def add(self, sample: Sample) -> None:
        key = (sample.name, sample.tags)
        kind = sample.kind
        if kind == "c":
            total = self._counters.get(key)
            if total is not None:
                self._counters[key] = total + sample.value
            elif self._new_series("c", key):
                self._counters[key] = sample.value
        elif kind == "g":
            if key not in self._gauges and not self._new_series("g", key):
                return
            if sample.delta:
                last = self._gauges.get(key)
                if last is None:
                    last = self._gauge_memory.get(key, 0.0)
                self._gauges[key] = last + sample.value
            else:
                self._gauges[key] = sample.value
        elif kind == "s":
            members = self._sets.get(key)
            if members is None:
                if not self._new_series("s", key):
                    return
                members = self._sets[key] = set()
            # Members are kept as 64-bit hashes: a 64 KB member costs 8 bytes, and a collision
            # among the few thousand members of one interval is vanishingly unlikely.
            member = hash(sample.member)
            if member not in members and self._new_sample():
                members.add(member)
        else:
            samples = self._timers.get(key)
            if samples is None:
                if not self._new_series("t", key):
                    return
                samples = self._timers[key] = []
            if self._new_sample():
                samples.append(sample.value)

    def flush(self, *, now: datetime) -> Flush:
        """The interval's points, all at `now`; the state starts afresh (gauge values stay)."""
        points: list[PointInput] = []
        stats = self.stats
        for (name, tags), total in self._counters.items():
            if not value_ok(total):
                stats.out_of_range += 1
                self.invalid_log.report(InvalidLine("the counter's sum lies outside ±1e15", name))
                continue
            points.append(PointInput(COUNTER, name, total, now, dict(tags)))
        memory = self._gauge_memory
        for key, value in self._gauges.items():
            memory.pop(key, None)
            memory[key] = value
            if not value_ok(value):
                stats.out_of_range += 1
                self.invalid_log.report(InvalidLine("the gauge lies outside ±1e15", key[0]))
                continue
            points.append(PointInput(VALUE, key[0], value, now, dict(key[1])))
        while len(memory) > GAUGE_MEMORY:
            memory.popitem(last=False)
        for (name, tags), samples in self._timers.items():
            tag_dict = dict(tags)
            points.extend(PointInput(VALUE, name, value, now, tag_dict) for value in samples)
        for (name, tags), members in self._sets.items():
            points.append(PointInput(VALUE, name, float(len(members)), now, dict(tags)))
        self._reset()
        return Flush(points, stats)


__all__ = [
    "Aggregator",
    "Flush",
    "FlushStats",
    "InvalidLine",
    "InvalidLog",
    "Sample",
    "clean_name",
    "parse_line",
    "split_lines",
]
