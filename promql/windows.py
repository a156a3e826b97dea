"""Range functions (`rate`, `*_over_time`, …) over the samples of one series in many windows.

A range function is evaluated at every step time `t` over the samples with times in
`(t - range, t]` (Prometheus 3's left-open windows). Each window is a slice `[lo, hi)` of the
series' sorted samples, found for all steps at once with `searchsorted`; the reductions run
over all windows at once in numpy (`ufunc.reduceat`, `bincount`), never step by step in Python.

Every function returns `(values[n], present[n])`: a window without the samples the function
needs has no result at that step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from . import sums
from .errors import Unsupported
from .values import Samples

Result = tuple[np.ndarray, np.ndarray]


def window_bounds(
    times: np.ndarray, ends: np.ndarray, range_ms: int
) -> tuple[np.ndarray, np.ndarray]:
    """`lo, hi` such that `times[lo:hi]` are the samples in `(end - range, end]` for each end."""
    lo = np.searchsorted(times, ends - range_ms, side="right")
    hi = np.searchsorted(times, ends, side="right")
    return lo, hi


def segment_reduce(
    ufunc: np.ufunc, values: np.ndarray, lo: np.ndarray, hi: np.ndarray
) -> np.ndarray:
    """`ufunc.reduce(values[lo:hi])` for every window; meaningless where `lo >= hi`.

    `reduceat` over the interleaved bounds `[lo0, hi0, lo1, hi1, …]` reduces each
    `values[lo:hi]` at even positions; a sentinel keeps `hi == len(values)` a valid index.
    """
    if not len(lo):
        return np.empty(0)
    padded = np.append(values, 0.0)
    bounds = np.empty(2 * len(lo), dtype=np.intp)
    bounds[0::2] = lo
    bounds[1::2] = hi
    return ufunc.reduceat(padded, bounds)[0::2]


def window_expand(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every (window, sample index) pair: for reductions that need each value twice."""
    counts = hi - lo
    total = int(counts.sum())
    window = np.repeat(np.arange(len(lo)), counts)
    starts = np.cumsum(counts) - counts
    index = np.arange(total) - np.repeat(starts, counts) + np.repeat(lo, counts)
    return window, index


def _sum(values: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    return segment_reduce(np.add, values, lo, hi)


def _compensated_sum(
    times: np.ndarray, values: np.ndarray, lo: np.ndarray, hi: np.ndarray
) -> np.ndarray:
    """sum_over_time: a plain sum where it cannot have lost precision, else compensated."""
    plain = _sum(values, lo, hi)
    magnitude = segment_reduce(np.add, np.abs(values), lo, hi)
    doubtful = ~np.isfinite(plain) | (magnitude > 1e12 * np.abs(plain))
    doubtful &= hi > lo
    if doubtful.any():
        rows, present = sums.window_positions(values, lo[doubtful], hi[doubtful])
        plain[doubtful] = sums.compensated_sum(rows, present)
    return plain


def _avg(times: np.ndarray, values: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    plain = _sum(values, lo, hi) / (hi - lo)
    magnitude = segment_reduce(np.add, np.abs(values), lo, hi)
    doubtful = ~np.isfinite(plain) | (magnitude > 1e12 * np.abs(plain) * (hi - lo))
    doubtful &= hi > lo
    if doubtful.any():
        rows, present = sums.window_positions(values, lo[doubtful], hi[doubtful])
        plain[doubtful] = sums.prometheus_mean(rows, present)
    return plain


def _mean_and_centred(
    values: np.ndarray, lo: np.ndarray, hi: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    count = (hi - lo).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = _sum(values, lo, hi) / count
    window, index = window_expand(lo, hi)
    return mean, window, values[index] - mean[window]


def _variance(values: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Population variance per window, from the deviations (two passes: no cancellation)."""
    _, window, centred = _mean_and_centred(values, lo, hi)
    count = (hi - lo).astype(float)
    squares = np.bincount(window, weights=centred * centred, minlength=len(lo))
    with np.errstate(invalid="ignore", divide="ignore"):
        return squares / count


def phi_outside(phi: float) -> float | None:
    """A quantile's answer when φ is outside [0, 1] (or NaN), as Prometheus: NaN, -Inf, +Inf."""
    if np.isnan(phi):
        return float("nan")
    if phi < 0:
        return float("-inf")
    if phi > 1:
        return float("inf")
    return None


def quantile_sorted(phi: float, ordered: np.ndarray) -> float:
    """Prometheus's quantile of already sorted values (linear between closest ranks)."""
    outside = phi_outside(phi)
    if outside is not None:
        return outside
    n = len(ordered)
    if n == 0:
        return float("nan")
    rank = phi * (n - 1)
    lower = max(0, int(np.floor(rank)))
    upper = min(n - 1, lower + 1)
    weight = rank - np.floor(rank)
    return float(ordered[lower] * (1 - weight) + ordered[upper] * weight)


def _quantiles(phis: np.ndarray, values: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    out = np.full(len(lo), np.nan)
    for k in np.flatnonzero(hi > lo):
        out[k] = quantile_sorted(float(phis[k]), _go_sorted(values[lo[k] : hi[k]]))
    return out


def _go_sorted(values: np.ndarray) -> np.ndarray:
    """Sorted as Go's sort.Float64Slice sorts: NaN before every number."""
    nan = np.isnan(values)
    if not nan.any():
        return np.sort(values)
    return np.concatenate([values[nan], np.sort(values[~nan])])


def _regression(
    times: np.ndarray, values: np.ndarray, lo: np.ndarray, hi: np.ndarray, intercept_at: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares slope (per second) and the value at `intercept_at` per window.

    As Prometheus's linearRegression: a window of one repeated value has slope 0 (NaN when
    that value is infinite).
    """
    window, index = window_expand(lo, hi)
    x = (times[index] - intercept_at[window]) / 1000.0
    y = values[index]
    count = (hi - lo).astype(float)
    n = len(lo)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_x = np.bincount(window, weights=x, minlength=n) / count
        mean_y = np.bincount(window, weights=y, minlength=n) / count
        dx = x - mean_x[window]
        dy = y - mean_y[window]
        cov = np.bincount(window, weights=dx * dy, minlength=n)
        var = np.bincount(window, weights=dx * dx, minlength=n)
        slope = cov / var
        intercept = mean_y - slope * mean_x
    # Constant windows: Prometheus answers slope 0 and the value itself.
    first = values[np.minimum(lo, len(values) - 1)] if len(values) else np.zeros(n)
    same = np.bincount(window, weights=(y != first[window]).astype(float), minlength=n) == 0
    constant = same & (hi > lo)
    slope = np.where(constant, np.where(np.isinf(first), np.nan, 0.0), slope)
    intercept = np.where(constant, np.where(np.isinf(first), np.nan, first), intercept)
    return slope, intercept


def _extrapolated(
    samples: Samples,
    lo: np.ndarray,
    hi: np.ndarray,
    ends: np.ndarray,
    range_ms: int,
    *,
    is_counter: bool,
    is_rate: bool,
) -> Result:
    """Prometheus's extrapolatedRate (rate, increase, delta) over raw samples."""
    times, values = samples.times, samples.values
    present = hi - lo >= 2
    out = np.full(len(lo), np.nan)
    if not present.any():
        return out, present
    lo_p, hi_p = lo[present], hi[present] - 1
    first_v, last_v = values[lo_p], values[hi_p]
    first_t, last_t = times[lo_p], times[hi_p]
    result = last_v - first_v
    if is_counter:
        previous = np.concatenate([[0.0], values[:-1]])
        drops = np.where(values < previous, previous, 0.0)
        drops[0] = 0.0
        result = result + segment_reduce(np.add, drops, lo_p + 1, hi_p + 1)
    range_start = ends[present] - range_ms
    range_end = ends[present]
    to_start = (first_t - range_start) / 1000.0
    to_end = (range_end - last_t) / 1000.0
    sampled = (last_t - first_t) / 1000.0
    average = sampled / (hi_p - lo_p)
    threshold = average * 1.1
    to_start = np.where(to_start >= threshold, average / 2, to_start)
    if is_counter:
        with np.errstate(invalid="ignore", divide="ignore"):
            to_zero = np.where(
                (result > 0) & (first_v >= 0), sampled * (first_v / result), to_start
            )
        to_start = np.minimum(to_start, to_zero)
    to_end = np.where(to_end >= threshold, average / 2, to_end)
    with np.errstate(invalid="ignore", divide="ignore"):
        factor = (sampled + to_start + to_end) / sampled
        if is_rate:
            factor = factor / (range_ms / 1000.0)
        out[present] = result * factor
    return out, present


def _running_at(samples: Samples, running: np.ndarray, at: np.ndarray) -> np.ndarray:
    """A counter's running total at each time: its last sample at or before it, else `base`."""
    index = np.searchsorted(samples.times, at, side="right") - 1
    safe = np.maximum(index, 0)
    taken = running[safe] if len(running) else np.zeros(len(at))
    return np.where(index >= 0, taken, samples.base)


def _exact_increase(
    samples: Samples, lo: np.ndarray, hi: np.ndarray, ends: np.ndarray, range_ms: int
) -> Result:
    """The sum of a counter's increments in each window, from its running totals."""
    running = samples.values
    present = hi > lo
    after = _running_at(samples, running, ends)
    before = _running_at(samples, running, ends - range_ms)
    return after - before, present


def range_apply(
    name: str,
    samples: Samples,
    ends: np.ndarray,
    range_ms: int,
    *,
    steps: np.ndarray,
    scalar: np.ndarray | None = None,
) -> Result:
    """The range function `name` over `samples` in the windows ending at `ends`.

    `steps` are the evaluation times (the window ends differ from them under `offset` or `@`);
    `scalar` is the function's other argument at each step where it has one (the φ of
    quantile_over_time, the horizon of predict_linear).
    """
    times, values = samples.times, samples.values
    lo, hi = window_bounds(times, ends, range_ms)
    count = hi - lo
    some = count > 0
    if samples.counter and name in ("increase", "rate"):
        increase, present = _exact_increase(samples, lo, hi, ends, range_ms)
        if name == "rate":
            increase = increase / (range_ms / 1000.0)
        return increase, present
    function = _SIMPLE.get(name)
    if function is not None:
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            return function(times, values, lo, hi), some
    if name in ("rate", "increase", "delta"):
        return _extrapolated(
            samples, lo, hi, ends, range_ms, is_counter=name != "delta", is_rate=name == "rate"
        )
    if name in ("irate", "idelta"):
        return _instant_rate(times, values, lo, hi, is_rate=name == "irate")
    if name == "deriv":
        two = count >= 2
        slope, _ = _regression(
            times, values, lo, hi, times[np.minimum(lo, len(times) - 1)] if len(times) else ends
        )
        return slope, two
    if name == "predict_linear":
        assert scalar is not None
        two = count >= 2
        slope, intercept = _regression(times, values, lo, hi, steps)
        return slope * scalar + intercept, two
    if name == "quantile_over_time":
        assert scalar is not None
        return _quantiles(scalar, values, lo, hi), some
    raise Unsupported(f"function {name}() is not supported")


# Windows reduced at once when many series share one array (shifted_series): a bound on the
# reductions' arrays, which are a few times the windows.
WINDOWS_AT_ONCE = 1_000_000


def shifted_series(
    count: int, ends: np.ndarray, low: int, high: int
) -> Iterator[tuple[int, int, np.ndarray, np.ndarray]]:
    """`count` series to reduce together, in chunks of about WINDOWS_AT_ONCE windows, as
    (first, stop, shifts, flat ends). Series k of a chunk moves its times (all in [low, high])
    by shifts[k] = k * span - base, so that one sorted array holds them all and no window
    (none starts before `low` or ends after `high`) reaches another series; the flat ends are
    every series' window ends, moved the same way."""
    base = low - 1
    span = high - base + 1
    chunk = max(1, WINDOWS_AT_ONCE // max(len(ends), 1))
    for first in range(0, count, chunk):
        stop = min(first + chunk, count)
        shifts = np.arange(stop - first, dtype=np.int64) * span - base
        yield first, stop, shifts, (shifts[:, None] + ends[None, :]).ravel()


def range_apply_many(
    name: str, series: list[Samples], ends: np.ndarray, range_ms: int
) -> Result | None:
    """range_apply over many series at once, as (values, present) with a row per series, for
    the functions that only reduce inside each window (the `*_over_time` of _SIMPLE, and the
    exact increase and rate of counters); None for the others. The series share one sorted
    array (shifted_series), so that one window_bounds and one reduction serve them all."""
    exact = name in ("increase", "rate")
    if not (name in _SIMPLE or (exact and all(s.counter for s in series))):
        return None
    n = len(ends)
    if not series:
        return np.empty((0, n)), np.empty((0, n), dtype=bool)
    low = min([int(ends.min()) - range_ms, *(int(s.times[0]) for s in series if len(s.times))])
    high = max([int(ends.max()), *(int(s.times[-1]) for s in series if len(s.times))])
    values_out, present_out = [], []
    for first, stop, shifts, flat_ends in shifted_series(len(series), ends, low, high):
        part = series[first:stop]
        lengths = np.array([len(s.times) for s in part])
        times = np.concatenate([s.times for s in part]) + np.repeat(shifts, lengths)
        values = np.concatenate([s.values for s in part]).astype(float, copy=False)
        lo, hi = window_bounds(times, flat_ends, range_ms)
        present = hi > lo
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            if exact:
                # A counter's running total at a window's end is its last sample at or before
                # it (index hi - 1), at its start its last sample at or before that (lo - 1):
                # window_bounds' own searches. Before the series' first sample, its base.
                starts = np.repeat(np.cumsum(lengths) - lengths, n)
                bases = np.repeat([s.base for s in part], n)
                padded = np.append(values, 0.0)
                after = np.where(hi > starts, padded[hi - 1], bases)
                before = np.where(lo > starts, padded[lo - 1], bases)
                result = after - before
                if name == "rate":
                    result = result / (range_ms / 1000.0)
            else:
                result = _SIMPLE[name](times, values, lo, hi)
        values_out.append(result.reshape(len(part), n))
        present_out.append(present.reshape(len(part), n))
    return np.concatenate(values_out), np.concatenate(present_out)


def _instant_rate(
    times: np.ndarray, values: np.ndarray, lo: np.ndarray, hi: np.ndarray, *, is_rate: bool
) -> Result:
    present = hi - lo >= 2
    out = np.full(len(lo), np.nan)
    if not present.any():
        return out, present
    last = hi[present] - 1
    previous = last - 1
    result = values[last] - values[previous]
    if is_rate:
        result = np.where(values[last] < values[previous], values[last], result)
        with np.errstate(invalid="ignore", divide="ignore"):
            result = result / ((times[last] - times[previous]) / 1000.0)
    out[present] = result
    return out, present


def _changes(times: np.ndarray, values: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    previous = np.concatenate([[np.nan], values[:-1]])
    changed = ~((values == previous) | (np.isnan(values) & np.isnan(previous)))
    changed[:1] = False
    cumulative = np.concatenate([[0], np.cumsum(changed)])
    return (cumulative[hi] - cumulative[np.minimum(lo + 1, hi)]).astype(float)


def _resets(times: np.ndarray, values: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    previous = np.concatenate([[np.nan], values[:-1]])
    dropped = values < previous
    cumulative = np.concatenate([[0], np.cumsum(dropped)])
    return (cumulative[hi] - cumulative[np.minimum(lo + 1, hi)]).astype(float)


def _mad(times: np.ndarray, values: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    out = np.full(len(lo), np.nan)
    for k in np.flatnonzero(hi > lo):
        window = values[lo[k] : hi[k]]
        if np.isnan(window).any():
            continue  # a NaN makes the median, and so the deviation, undefined
        median = quantile_sorted(0.5, _go_sorted(window))
        out[k] = quantile_sorted(0.5, _go_sorted(np.abs(window - median)))
    return out


_SIMPLE: dict[str, Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]] = {
    "count_over_time": lambda t, v, lo, hi: (hi - lo).astype(float),
    "sum_over_time": _compensated_sum,
    "avg_over_time": _avg,
    # fmin/fmax skip NaN as Prometheus does: NaN only when every value is NaN.
    "min_over_time": lambda t, v, lo, hi: segment_reduce(np.fmin, v, lo, hi),
    "max_over_time": lambda t, v, lo, hi: segment_reduce(np.fmax, v, lo, hi),
    "last_over_time": lambda t, v, lo, hi: np.append(v, np.nan)[np.maximum(hi - 1, 0)],
    "present_over_time": lambda t, v, lo, hi: np.ones(len(lo)),
    "stdvar_over_time": lambda t, v, lo, hi: _variance(v, lo, hi),
    "stddev_over_time": lambda t, v, lo, hi: np.sqrt(_variance(v, lo, hi)),
    "mad_over_time": _mad,
    "changes": _changes,
    "resets": _resets,
}

RANGE_FUNCTIONS = frozenset(
    [
        *_SIMPLE,
        "rate",
        "increase",
        "delta",
        "irate",
        "idelta",
        "deriv",
        "predict_linear",
        "quantile_over_time",
        "absent_over_time",
    ]
)


# Range functions that rollups (count, sum, min, max per bucket) answer exactly, by series kind.
ROLLUP_ANY = frozenset(["count_over_time", "present_over_time"])
ROLLUP_GAUGE = frozenset(["sum_over_time", "avg_over_time", "min_over_time", "max_over_time"])
ROLLUP_COUNTER = frozenset(["increase", "rate"])


def rollup_pushable(name: str, *, counter: bool) -> bool:
    return name in ROLLUP_ANY or name in (ROLLUP_COUNTER if counter else ROLLUP_GAUGE)


@dataclass
class Rollups:
    """One series' rollup buckets (start times in ms) and its points exactly on window edges."""

    buckets: np.ndarray
    counts: np.ndarray
    sums: np.ndarray
    mins: np.ndarray
    maxes: np.ndarray
    edge_times: np.ndarray
    edge_values: np.ndarray


def rollup_apply(name: str, rollups: Rollups, ends: np.ndarray, range_ms: int) -> Result | None:
    """`name` over the windows `(end - range, end]` from whole buckets `[end - range, end)`,
    corrected by the points exactly at `end` (in the window, in the next bucket) and at
    `end - range` (in the first bucket, not in the window). None where the answer needs the
    raw points (a min or max with a point on a window's open edge)."""
    lo = np.searchsorted(rollups.buckets, ends - range_ms, side="left")
    hi = np.searchsorted(rollups.buckets, ends, side="left")
    count = segment_reduce(np.add, rollups.counts.astype(float), lo, hi)
    count = np.where(hi > lo, count, 0.0)
    total = np.where(hi > lo, segment_reduce(np.add, rollups.sums, lo, hi), 0.0)
    edges = rollups.edge_times
    if len(edges):
        e_lo, e_hi = (
            np.searchsorted(edges, ends, side="left"),
            np.searchsorted(edges, ends, side="right"),
        )
        s_lo = np.searchsorted(edges, ends - range_ms, side="left")
        s_hi = np.searchsorted(edges, ends - range_ms, side="right")
        if name in ("min_over_time", "max_over_time") and (s_hi > s_lo).any():
            return None
        edge_values = rollups.edge_values
        count = count + (e_hi - e_lo) - (s_hi - s_lo)
        total = total + np.where(e_hi > e_lo, segment_reduce(np.add, edge_values, e_lo, e_hi), 0.0)
        total = total - np.where(s_hi > s_lo, segment_reduce(np.add, edge_values, s_lo, s_hi), 0.0)
    present = count > 0
    with np.errstate(all="ignore"):
        if name == "count_over_time":
            return count, present
        if name == "present_over_time":
            return np.ones(len(ends)), present
        if name in ("sum_over_time", "increase"):
            return total, present
        if name == "rate":
            return total / (range_ms / 1000.0), present
        if name == "avg_over_time":
            return total / count, present
        ufunc = np.fmin if name == "min_over_time" else np.fmax
        column = rollups.mins if name == "min_over_time" else rollups.maxes
        extreme = np.where(hi > lo, segment_reduce(ufunc, column, lo, hi), np.nan)
        if len(edges):
            at_end = np.where(
                e_hi > e_lo, segment_reduce(ufunc, rollups.edge_values, e_lo, e_hi), np.nan
            )
            extreme = ufunc(extreme, at_end)
        return extreme, present
