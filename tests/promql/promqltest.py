"""A reader of Prometheus's PromQL test scripts (`load`, `eval instant|range`, `clear`) that runs
them against our evaluator on series held in memory.

The scripts are Prometheus's own (tests/promql/testdata/, Apache-2.0): the same data, the same
expressions and the answers Prometheus gives. Constructs this service does not have (native
histograms, staleness markers, experimental functions) are skipped and counted, never guessed.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import promql_parser as pp
import re2

from promql.errors import PromQLError
from promql.evaluator import Evaluator, LabelMatcher
from promql.values import NAME, Labels, Matrix, Samples, Scalar, String, Vector, labels_of

TESTDATA = Path(__file__).parent / "testdata"


class Skip(Exception):
    """A construct of the script this service does not support."""


def duration_ms(text: str) -> int:
    text = text.strip()
    if re.fullmatch(r"-?\d+(\.\d+)?", text):
        return round(float(text) * 1000)
    if text.startswith("-"):
        return -duration_ms(text[1:])
    total = 0
    for number, unit in re.findall(r"(\d+)(ms|s|m|h|d|w|y)", text):
        total += int(number) * _UNITS[unit]
    return total


_UNITS = {
    "ms": 1,
    "s": 1000,
    "m": 60_000,
    "h": 3_600_000,
    "d": 86_400_000,
    "w": 604_800_000,
    "y": 31_536_000_000,
}


class MemorySource:
    """Series in memory, matched like the database does (RE2, anchored)."""

    def __init__(self) -> None:
        self.series: dict[Labels, dict[int, float]] = {}

    def add(self, labels: Labels, t: int, v: float) -> None:
        self.series.setdefault(labels, {})[t] = v  # a later sample at the same time wins

    def snapshot(self) -> MemorySource:
        """The series as they are now: later `load`s of the script do not reach it."""
        copy = MemorySource()
        copy.series = {labels: dict(points) for labels, points in self.series.items()}
        return copy

    def select(self, matchers: list[LabelMatcher], start_ms: int, end_ms: int) -> list[Samples]:
        out = []
        compiled = [(m, re2.compile(f"^(?:{m.value})$") if "~" in m.op else None) for m in matchers]
        for labels, points in self.series.items():
            pairs = dict(labels)
            if all(_matches(m, regex, pairs.get(m.name, "")) for m, regex in compiled):
                points = sorted(points.items())
                times = np.array([t for t, _ in points if start_ms < t <= end_ms], dtype=np.int64)
                values = np.array([v for t, v in points if start_ms < t <= end_ms], dtype=float)
                out.append(Samples(labels, times, values))
        return out


def _matches(matcher: LabelMatcher, regex: object, value: str) -> bool:
    if matcher.op == "=":
        return value == matcher.value
    if matcher.op == "!=":
        return value != matcher.value
    found = regex.match(value) is not None  # type: ignore[attr-defined]
    return found if matcher.op == "=~" else not found


_NUMBER = r"(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_EXPANSION = re.compile(rf"^([-+]?{_NUMBER}|[-+]?Inf|NaN|_)(?:([+-])({_NUMBER}|Inf))?x(\d+)$")


def series_values(text: str) -> list[float | None]:
    """`1 2 _ 3+1x2 NaN` → [1, 2, None, 3, 4, 5, nan]; histograms and stale markers skip."""
    out: list[float | None] = []
    for item in text.split():
        if item.startswith("{{") or item == "stale":
            raise Skip("native histograms or staleness markers")
        match = _EXPANSION.match(item)
        if match:
            start, sign, delta, count = match.groups()
            repeat = int(count)
            if start == "_":
                out.extend([None] * repeat)
                continue
            value = _number(start)
            step = _number(delta) if delta else 0.0
            if sign == "-":
                step = -step
            for k in range(repeat + 1):
                out.append(value + k * step)
            continue
        out.append(None if item == "_" else _number(item))
    return out


def _number(text: str) -> float:
    lowered = text.lower()
    if lowered in ("inf", "+inf"):
        return math.inf
    if lowered == "-inf":
        return -math.inf
    if lowered == "nan":
        return math.nan
    return float(text)


def series_line(line: str) -> tuple[Labels, str]:
    """`name{a="b"} 1 2 3` → (labels, "1 2 3")."""
    line = line.strip()
    depth = 0
    end = None
    in_string = False
    for i, char in enumerate(line):
        if char == '"' and (i == 0 or line[i - 1] != "\\"):
            in_string = not in_string
        elif not in_string and char == "{":
            depth += 1
        elif not in_string and char == "}":
            depth -= 1
            if depth == 0:
                end = i + 1
                break
        elif not in_string and depth == 0 and char.isspace():
            end = i
            break
    if end is None:
        end = len(line)
    selector = line[:end]
    rest = line[end:]
    if selector.replace(" ", "") == "{}":
        return (), rest
    node = pp.parse(selector)
    pairs = {m.name: m.value for m in node.matchers.matchers}
    if node.name:
        pairs[NAME] = node.name
    return labels_of(pairs), rest


@dataclass
class Case:
    path: str
    line: int
    expr: str
    start_ms: int
    end_ms: int
    step_ms: int
    fail: bool = False
    ordered: bool = False
    expected: list[str] = field(default_factory=list)
    source: MemorySource | None = None
    skip: str | None = None

    @property
    def id(self) -> str:
        return f"{Path(self.path).name}:{self.line}"


_EVAL = re.compile(
    r"^eval(?:_(fail|ordered|warn|info))?\s+(instant at (\S+)|range from (\S+) to (\S+) step (\S+))\s+(.*)$"
)


def cases(path: Path) -> list[Case]:
    out: list[Case] = []
    source = MemorySource()
    skip_load: str | None = None
    skipped_names: set[str] = set()
    lines = path.read_text().splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        i += 1
        if not line or line.startswith("#"):
            continue
        if line == "clear":
            source = MemorySource()
            skip_load = None
            skipped_names = set()
            continue
        if line.startswith("load"):
            parts = line.split()
            if parts[0] not in ("load", "load_with_nhcb"):
                skip_load = "load variant"
            # load_with_nhcb also offers the buckets as native histograms: expressions over
            # the native form find no series here and are skipped as unsupported below.
            nhcb = parts[0] == "load_with_nhcb"
            interval = duration_ms(parts[-1])
            while i < len(lines) and lines[i].strip() and not lines[i].strip().startswith("#"):
                labels, text = series_line(lines[i])
                if nhcb:
                    name = dict(labels).get(NAME, "")
                    for suffix in ("_bucket", "_count", "_sum"):
                        if name.endswith(suffix):
                            skipped_names.add(name[: -len(suffix)])
                try:
                    values = series_values(text)
                except Skip:
                    # A series of native histograms or with staleness markers: left out, and
                    # every expression naming it skipped.
                    skipped_names.add(dict(labels).get(NAME, ""))
                else:
                    for k, value in enumerate(values):
                        if value is not None:
                            source.add(labels, k * interval, value)
                i += 1
            continue
        match = _EVAL.match(line)
        if not match:
            continue
        flavour, _, at, start, end, step, expr = match.groups()
        if at is not None:
            start_ms = end_ms = duration_ms(at)
            step_ms = 1000
        else:
            start_ms, end_ms, step_ms = duration_ms(start), duration_ms(end), duration_ms(step)
        case = Case(
            str(path), i, expr, start_ms, end_ms, step_ms, source=source.snapshot(), skip=skip_load
        )
        if skipped_names and (
            "__name__" in expr
            or any(name and re.search(rf"\b{re.escape(name)}\b", expr) for name in skipped_names)
        ):
            case.skip = case.skip or "native histograms or staleness markers"
        case.fail = flavour == "fail"
        case.ordered = flavour == "ordered"
        if flavour in ("warn", "info"):
            case.skip = case.skip or "annotations"
        while (
            i < len(lines)
            and lines[i].strip()
            and not lines[i].strip().startswith(("eval", "load", "clear"))
        ):
            text = lines[i].strip()
            i += 1
            if text.startswith("#"):
                continue
            if text.startswith("expect"):
                if text.startswith("expect fail"):
                    case.fail = True
                elif text.startswith("expect ordered"):
                    case.ordered = True
                elif text.startswith(
                    ("expect warn", "expect info", "expect no_warn", "expect no_info")
                ):
                    pass
                else:
                    case.skip = case.skip or f"directive {text.split()[1]}"
                continue
            case.expected.append(text)
        out.append(case)
    return out


def run(case: Case) -> None:
    """Evaluate the case and assert its expected answer; raises Skip for unsupported parts."""
    if case.skip:
        raise Skip(case.skip)
    try:
        node = pp.parse(case.expr)
    except ValueError as exc:
        if case.fail:
            return
        raise Skip(f"parser: {exc}") from None
    evaluator = Evaluator(
        case.source, start_ms=case.start_ms, end_ms=case.end_ms, step_ms=case.step_ms
    )
    try:
        value = evaluator.evaluate(node)
    except PromQLError as exc:
        if case.fail:
            return
        if exc.error_type == "execution" and "not supported" in exc.message:
            raise Skip(exc.message) from None
        raise AssertionError(f"{case.id} {case.expr}: {exc.message}") from None
    assert not case.fail, f"{case.id} {case.expr}: expected a failure, got {value}"
    if case.start_ms == case.end_ms:
        _check_instant(case, value)
    else:
        _check_range(case, value)


def _close(a: float, b: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    if math.isinf(a) or math.isinf(b):
        return a == b
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)


def _check_instant(case: Case, value: object) -> None:
    if isinstance(value, Scalar):
        assert len(case.expected) == 1, f"{case.id}: scalar answer, expected {case.expected}"
        want = series_values(case.expected[0])[0]
        got = float(value.values[0])
        assert want is not None and _close(got, want), f"{case.id} {case.expr}: {got} != {want}"
        return
    if isinstance(value, String):
        raise Skip("string answers")
    if isinstance(value, Matrix):
        got_m: dict[Labels, list[float]] = {s.labels: list(s.values) for s in value.series}
        want_m = {}
        for line in case.expected:
            labels, text = series_line(line)
            want_m[labels] = [v for v in series_values(text) if v is not None]
        assert set(got_m) == set(want_m), (
            f"{case.id} {case.expr}: {sorted(got_m)} != {sorted(want_m)}"
        )
        for labels, values in want_m.items():
            assert len(values) == len(got_m[labels]) and all(
                _close(a, b) for a, b in zip(got_m[labels], values, strict=True)
            ), f"{case.id} {case.expr} {labels}: {got_m[labels]} != {values}"
        return
    assert isinstance(value, Vector)
    got = {
        labels: float(value.values[i, 0])
        for i, labels in enumerate(value.labels)
        if value.present[i, 0]
    }
    order = [labels for i, labels in enumerate(value.labels) if value.present[i, 0]]
    want: dict[Labels, float] = {}
    want_order = []
    for line in case.expected:
        labels, text = series_line(line)
        number = series_values(text)[0]
        assert number is not None
        want[labels] = number
        want_order.append(labels)
    assert set(got) == set(want), f"{case.id} {case.expr}: got {sorted(got)} want {sorted(want)}"
    for labels, number in want.items():
        assert _close(got[labels], number), (
            f"{case.id} {case.expr} {labels}: {got[labels]} != {number}"
        )
    if case.ordered:
        assert order == want_order, f"{case.id} {case.expr}: order {order} != {want_order}"


def _check_range(case: Case, value: object) -> None:
    steps = np.arange(case.start_ms, case.end_ms + 1, case.step_ms)
    if isinstance(value, Scalar):
        value = Vector([()], value.values[None, :], np.ones((1, len(steps)), dtype=bool))
    assert isinstance(value, Vector), f"{case.id}: {type(value).__name__} answer to a range query"
    got: dict[Labels, list[float | None]] = {}
    for i, labels in enumerate(value.labels):
        row = [
            float(value.values[i, k]) if value.present[i, k] else None for k in range(len(steps))
        ]
        if any(v is not None for v in row):
            got[labels] = row
    want: dict[Labels, list[float | None]] = {}
    for line in case.expected:
        labels, text = series_line(line)
        values = series_values(text)
        values += [None] * (len(steps) - len(values))
        want[labels] = values
    assert set(got) == set(want), f"{case.id} {case.expr}: got {sorted(got)} want {sorted(want)}"
    for labels, values in want.items():
        for k, (a, b) in enumerate(zip(got[labels], values, strict=True)):
            assert (a is None) == (b is None) and (a is None or _close(a, b)), (
                f"{case.id} {case.expr} {labels} step {k}: {got[labels]} != {values}"
            )
