"""Compensated sums and means, in the order Prometheus adds, so that `sum`, `avg`,
`sum_over_time` and `avg_over_time` give its answers to the last bit that matters.

Prometheus adds with Kahan-Neumaier compensation (so 1e100 + 2 - 1e100 is 2) and, for a mean
whose running sum would overflow, switches to an incremental mean. Here the same recurrences
run over numpy arrays: one addition per row (or per position in a window), every step at once.
"""

from __future__ import annotations

import numpy as np


def kahan_inc(inc: np.ndarray, total: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with np.errstate(all="ignore"):
        t = total + inc
        big = np.abs(total) >= np.abs(inc)
        c = np.where(
            np.isinf(t), 0.0, np.where(big, c + ((total - t) + inc), c + ((inc - t) + total))
        )
    return t, c


def _columns(values: np.ndarray, present: np.ndarray):
    """(value, present) per addition, for rows[L, n] or the positions of windows."""
    for k in range(values.shape[0]):
        yield values[k], present[k]


def compensated_sum(values: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Σ over axis 0 of the present values, compensated."""
    n = values.shape[1]
    total = np.zeros(n)
    c = np.zeros(n)
    for value, here in _columns(values, present):
        t, nc = kahan_inc(np.where(here, value, 0.0), total, c)
        total = np.where(here, t, total)
        c = np.where(here, nc, c)
    with np.errstate(all="ignore"):
        return np.where(np.isinf(total), total, total + c)


def prometheus_mean(values: np.ndarray, present: np.ndarray) -> np.ndarray:
    """The mean over axis 0 of the present values, as Prometheus's `avg`: a compensated sum
    divided by the count, or an incremental mean from the addition that would overflow."""
    n = values.shape[1]
    total = np.zeros(n)
    c = np.zeros(n)
    mean = np.zeros(n)
    count = np.zeros(n)
    incremental = np.zeros(n, dtype=bool)
    with np.errstate(all="ignore"):
        for value, here in _columns(values, present):
            f = np.where(here, value, 0.0)
            count = count + here
            first = here & (count == 1)
            # The first value starts the sum.
            total = np.where(first, f, total)
            c = np.where(first, 0.0, c)
            rest = here & ~first
            # Incremental mean where it has begun.
            q = (count - 1) / count
            inc_mean, inc_c = kahan_inc(f / count, q * mean, q * c)
            step_inc = rest & incremental
            mean = np.where(step_inc, inc_mean, mean)
            c = np.where(step_inc, inc_c, c)
            # Direct sum where it does not overflow; else switch to incremental.
            direct = rest & ~incremental
            new_total, new_c = kahan_inc(f, total, c)
            fits = direct & ~np.isinf(new_total)
            total = np.where(fits, new_total, total)
            c = np.where(fits, new_c, c)
            switch = direct & np.isinf(new_total)
            if switch.any():
                start_mean = total / (count - 1)
                start_c = c / (count - 1)
                sw_mean, sw_c = kahan_inc(f / count, q * start_mean, q * start_c)
                mean = np.where(switch, sw_mean, mean)
                c = np.where(switch, sw_c, c)
                incremental = incremental | switch
        direct_mean = total / count + c / count
        out = np.where(incremental, mean + c, direct_mean)
        # Infinities: Prometheus keeps ±Inf (and NaN for both signs) rather than the mean.
        return np.where(np.isinf(mean) & incremental, mean, out)


def window_positions(
    values: np.ndarray, lo: np.ndarray, hi: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """values[lo + k] for k below the longest window, as rows[k, windows], with presence."""
    longest = int((hi - lo).max()) if len(lo) else 0
    k = np.arange(longest)[:, None]
    index = lo[None, :] + k
    present = index < hi[None, :]
    padded = np.append(values, 0.0)
    return padded[np.minimum(index, len(values))], present
