"""Functions over instant vectors and scalars: math, clamps, dates, labels and histograms.

Each works on a whole `Vector` (every series at every step) with numpy. As in Prometheus, the
result of a function that changes values has no metric name; `sort`, `label_replace` and
`label_join` keep it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime

import numpy as np
import re2

from .errors import ExecutionError
from .values import (
    NAME,
    Labels,
    Vector,
    distinct,
    label_get,
    labels_of,
    names_dropped,
    without_name,
)
from .windows import phi_outside

_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def _math(fn: Callable[[np.ndarray], np.ndarray]) -> Callable[[Vector], Vector]:
    def apply(vector: Vector) -> Vector:
        with np.errstate(all="ignore"):
            values = fn(vector.values)
        return names_dropped(vector, values)

    return apply


MATH: dict[str, Callable[[Vector], Vector]] = {
    "abs": _math(np.abs),
    "ceil": _math(np.ceil),
    "floor": _math(np.floor),
    "exp": _math(np.exp),
    "ln": _math(np.log),
    "log2": _math(np.log2),
    "log10": _math(np.log10),
    "sqrt": _math(np.sqrt),
    "sgn": _math(np.sign),
    "acos": _math(np.arccos),
    "acosh": _math(np.arccosh),
    "asin": _math(np.arcsin),
    "asinh": _math(np.arcsinh),
    "atan": _math(np.arctan),
    "atanh": _math(np.arctanh),
    "cos": _math(np.cos),
    "cosh": _math(np.cosh),
    "sin": _math(np.sin),
    "sinh": _math(np.sinh),
    "tan": _math(np.tan),
    "tanh": _math(np.tanh),
    "deg": _math(np.degrees),
    "rad": _math(np.radians),
}


def round_to(vector: Vector, to_nearest: np.ndarray) -> Vector:
    """round(v, to_nearest): half up, as Prometheus (math.Floor(v/n + 0.5) * n)."""
    with np.errstate(all="ignore"):
        inverse = 1.0 / to_nearest
        values = np.floor(vector.values * inverse + 0.5) / inverse
    return names_dropped(vector, values)


def clamp(vector: Vector, low: np.ndarray | None, high: np.ndarray | None) -> Vector:
    """clamp / clamp_min / clamp_max; clamp with max < min gives an empty vector."""
    values = vector.values
    present = vector.present.copy()
    with np.errstate(all="ignore"):
        if low is not None:
            values = np.where(np.isnan(values), values, np.maximum(values, low))
        if high is not None:
            values = np.where(np.isnan(values), values, np.minimum(values, high))
    if low is not None and high is not None:
        present &= ~(high < low)[None, :]
    return names_dropped(vector, values, present)


_DATE_PARTS: dict[str, Callable[[datetime], float]] = {
    "year": lambda d: d.year,
    "month": lambda d: d.month,
    "day_of_month": lambda d: d.day,
    "day_of_week": lambda d: (d.weekday() + 1) % 7,
    "day_of_year": lambda d: d.timetuple().tm_yday,
    "hour": lambda d: d.hour,
    "minute": lambda d: d.minute,
    "days_in_month": lambda d: _days_in_month(d.year, d.month),
}

DATE_FUNCTIONS = frozenset(_DATE_PARTS)


def _days_in_month(year: int, month: int) -> int:
    following = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)
    return (following - datetime(year, month, 1, tzinfo=UTC)).days


def date_part(name: str, vector: Vector) -> Vector:
    part = _DATE_PARTS[name]
    values = np.full(vector.values.shape, np.nan)
    for index in zip(*np.nonzero(vector.present), strict=True):
        seconds = vector.values[index]
        if np.isfinite(seconds):
            values[index] = part(datetime.fromtimestamp(float(seconds), UTC))
    return names_dropped(vector, values)


def sort_rows(vector: Vector, *, descending: bool) -> Vector:
    """Rows ordered by their value at the first step (an instant query's only one), NaN last."""
    if not len(vector) or vector.values.shape[1] != 1:
        return vector
    column = vector.values[:, 0]
    nan = np.isnan(column)
    keys = np.where(nan, 0.0, -column if descending else column)
    order = np.lexsort((keys, nan))
    return Vector(
        [vector.labels[i] for i in order],
        vector.values[order],
        vector.present[order],
        None if vector.times is None else vector.times[order],
    )


def _regex(pattern: str, where: str) -> re2._Regexp:
    try:
        return re2.compile(f"^(?:{pattern})$")
    except re2.error as exc:
        raise ExecutionError(f'invalid regular expression in {where}: "{pattern}": {exc}') from None


_EXPAND = re.compile(r"\$(?:\$|\{([A-Za-z0-9_]+)\}|([A-Za-z0-9_]+))")


def _expand(template: str, match: re2._Match, names: dict[str, int]) -> str:
    """Go's Regexp.Expand: `$1`, `${1}`, `$name`, `${name}`, `$$`; an unknown group is empty."""

    def one(found: re.Match[str]) -> str:
        if found.group(0) == "$$":
            return "$"
        ref = found.group(1) or found.group(2)
        if ref.isdigit():
            index = int(ref)
        elif ref in names:
            index = names[ref]
        else:
            return ""
        try:
            return match.group(index) or ""
        except (IndexError, re2.error):
            return ""

    return _EXPAND.sub(one, template)


def label_replace(vector: Vector, dst: str, replacement: str, src: str, pattern: str) -> Vector:
    regex = _regex(pattern, "label_replace()")
    if not _LABEL_NAME.match(dst) and dst != NAME:
        raise ExecutionError(f"invalid destination label name in label_replace(): {dst}")
    names = dict(regex.groupindex)
    out: list[Labels] = []
    for labels in vector.labels:
        match = regex.match(label_get(labels, src))
        if match is None:
            out.append(labels)
            continue
        value = _expand(replacement, match, names)
        pairs = dict(labels)
        pairs[dst] = value
        out.append(labels_of(pairs))
    return distinct(Vector(out, vector.values, vector.present, vector.times))


def label_join(vector: Vector, dst: str, separator: str, sources: list[str]) -> Vector:
    if not _LABEL_NAME.match(dst) and dst != NAME:
        raise ExecutionError(f"invalid destination label name in label_join(): {dst}")
    out = []
    for labels in vector.labels:
        pairs = dict(labels)
        pairs[dst] = separator.join(label_get(labels, source) for source in sources)
        out.append(labels_of(pairs))
    return distinct(Vector(out, vector.values, vector.present, vector.times))


def bucket_quantile(phi: float, bounds: np.ndarray, counts: np.ndarray) -> float:
    """Prometheus's bucketQuantile over classic `le` buckets (bounds sorted, counts aligned)."""
    outside = phi_outside(phi)
    if outside is not None:
        return outside
    if not len(bounds) or not np.isposinf(bounds[-1]):
        return float("nan")
    # Coalesce buckets of the same bound, then force counts monotonic.
    unique, starts = np.unique(bounds, return_index=True)
    if len(unique) != len(bounds):
        counts = np.add.reduceat(counts, starts)
        bounds = unique
    counts = np.maximum.accumulate(np.where(np.isnan(counts), -np.inf, counts))
    if len(bounds) < 2:
        return float("nan")
    observations = counts[-1]
    if observations == 0 or np.isnan(observations):
        return float("nan")
    rank = phi * observations
    b = int(np.searchsorted(counts[:-1], rank, side="left"))
    if b == len(bounds) - 1:
        return float(bounds[-2])
    if b == 0 and bounds[0] <= 0:
        return float(bounds[0])
    start = 0.0
    end = bounds[b]
    count = counts[b]
    if b > 0:
        start = bounds[b - 1]
        count -= counts[b - 1]
        rank -= counts[b - 1]
    return float(start + (end - start) * (rank / count))


def bucket_quantiles(phis: np.ndarray, bounds: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """bucket_quantile at many steps at once: `counts` has a column per step (every bucket
    present at each), `phis` a φ per step; the same operations, column by column."""
    steps = counts.shape[1]
    out = np.full(steps, np.nan)
    if len(bounds) and np.isposinf(bounds[-1]):
        unique, starts = np.unique(bounds, return_index=True)
        if len(unique) != len(bounds):
            counts = np.add.reduceat(counts, starts, axis=0)
            bounds = unique
        if len(bounds) >= 2:
            counts = np.maximum.accumulate(np.where(np.isnan(counts), -np.inf, counts), axis=0)
            observations = counts[-1]
            usable = ~((observations == 0) | np.isnan(observations))
            with np.errstate(invalid="ignore", divide="ignore"):
                rank = phis * observations
                # searchsorted(counts[:-1], rank, "left") of each column (counts ascend in it).
                b = (counts[:-1] < rank[None, :]).sum(axis=0)
                below = np.maximum(b - 1, 0)
                columns = np.arange(steps)
                start = np.where(b > 0, bounds[below], 0.0)
                end = bounds[np.minimum(b, len(bounds) - 1)]
                count = counts[np.minimum(b, len(bounds) - 1), columns]
                count = np.where(b > 0, count - counts[below, columns], count)
                rank = np.where(b > 0, rank - counts[below, columns], rank)
                value = start + (end - start) * (rank / count)
            value = np.where(b == len(bounds) - 1, bounds[-2], value)
            value = np.where((b == 0) & (bounds[0] <= 0), bounds[0], value)
            out = np.where(usable, value, np.nan)
    # φ outside [0, 1] (or NaN) decides before anything else, as in bucket_quantile.
    out = np.where(phis < 0, -np.inf, np.where(phis > 1, np.inf, out))
    return np.where(np.isnan(phis), np.nan, out)


def histogram_quantile(phi: np.ndarray, vector: Vector) -> Vector:
    """histogram_quantile(φ, buckets) over series with an `le` label, grouped by the rest."""
    groups: dict[Labels, list[tuple[float, int]]] = {}
    for i, labels in enumerate(vector.labels):
        le = label_get(labels, "le")
        try:
            bound = float(le.replace("+Inf", "inf")) if le else None
        except ValueError:
            bound = None
        if bound is None:
            continue  # series without a valid `le` are ignored, as Prometheus does
        key = tuple(pair for pair in without_name(labels) if pair[0] != "le")
        groups.setdefault(key, []).append((bound, i))
    n = vector.values.shape[1]
    out_labels: list[Labels] = []
    rows: list[np.ndarray] = []
    present_rows: list[np.ndarray] = []
    for key, members in groups.items():
        members.sort()
        bounds = np.array([bound for bound, _ in members])
        index = [i for _, i in members]
        counts = vector.values[index]
        present = vector.present[index]
        values = np.full(n, np.nan)
        any_present = present.any(axis=0)
        # Steps with every bucket present (nearly all) at once, the others one by one.
        whole = present.all(axis=0)
        if whole.any():
            values[whole] = bucket_quantiles(phi[whole], bounds, counts[:, whole])
        for step in np.flatnonzero(any_present & ~whole):
            mask = present[:, step]
            values[step] = bucket_quantile(float(phi[step]), bounds[mask], counts[mask, step])
        out_labels.append(key)
        rows.append(values)
        present_rows.append(any_present)
    if not rows:
        return Vector.empty(n)
    return Vector(out_labels, np.array(rows), np.array(present_rows))
