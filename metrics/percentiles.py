"""Exact percentiles of compacted days: their rows decoded and ranked in numpy.

PostgreSQL decodes a compacted row (migration 0014) at about 1.4 µs a point: `string_to_array`,
a cast per element and a window running sum. A percentile over compacted days took twice its raw
time that way (docs/PERFORMANCE.md). numpy parses the same texts in C (`np.fromstring`, about
20 ns a point), takes every row's running sum in one `cumsum`, and ranks the values of each
bucket as `percentile_cont` does:

    pos = fraction * (n - 1);  lo, hi = sorted[floor(pos)], sorted[ceil(pos)]
    value = lo + (pos - floor(pos)) * (hi - lo)   (lo alone when pos is whole)

the same IEEE operations in the same order as PostgreSQL's `float8_lerp`, so the answer is the
raw day's to the bit (tests/metrics/test_compaction.py compares every aggregation before and
after compaction). The decoding is the same as `gf_compact_points`: value = running sum of the
scaled deltas, as float8, divided by the float8 10^scale; times from `tstep` or from the running
sum of `t`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# 10.0 ** k as PostgreSQL's '{1,10,100,...}'::float8[] holds them (each exact in binary64).
_POW10 = np.array([1.0, 10.0, 100.0, 1000.0, 10000.0, 100000.0, 1000000.0])

# One compacted row as the selector reads it:
# (group code, hour in µs, points, last_us, tstep, scale, t, v)
CompactRow = tuple[int, int, int, int, int | None, int | None, str | None, str]


def _segment_cumsum(deltas: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The running sum of `deltas` restarted at every segment (`lengths` long each). int64 sums
    wrap, and the wrapped difference is still exact: every segment's own sums fit in int64."""
    sums = np.cumsum(deltas)
    ends = np.cumsum(lengths)
    before = np.zeros(len(lengths), dtype=np.int64)
    before[1:] = sums[ends[:-1] - 1]
    return sums - np.repeat(before, lengths)


def _parse(texts: list[str], dtype) -> np.ndarray:
    return np.fromstring(",".join(texts), dtype=dtype, sep=",")


def compact_decode(rows: Sequence[CompactRow]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(group code, time in µs since the epoch, value) of every point of `rows`, row by row in
    time order: what `gf_compact_points` gives, bit for bit."""
    count = len(rows)
    points = np.fromiter((r[2] for r in rows), np.int64, count)
    hours = np.fromiter((r[1] for r in rows), np.int64, count)
    last = np.fromiter((r[3] for r in rows), np.int64, count)
    scaled = np.fromiter((r[5] is not None for r in rows), bool, count)
    stepped = np.fromiter((r[6] is None for r in rows), bool, count)
    codes = np.repeat(np.fromiter((r[0] for r in rows), np.int64, count), points)

    values = np.empty(int(points.sum()), dtype=np.float64)
    if scaled.any():
        lengths = points[scaled]
        ints = _segment_cumsum(_parse([r[7] for r in rows if r[5] is not None], np.int64), lengths)
        scales = np.fromiter((r[5] for r in rows if r[5] is not None), np.int64, len(lengths))
        values[np.repeat(scaled, points)] = ints.astype(np.float64) / np.repeat(
            _POW10[scales], lengths
        )
    if not scaled.all():
        values[np.repeat(~scaled, points)] = _parse(
            [r[7] for r in rows if r[5] is None], np.float64
        )

    # µs from the hour: for a stepped row, point o (1-based) is at last_us - (points - o) * tstep.
    offsets = np.empty(len(values), dtype=np.int64)
    if stepped.any():
        lengths = points[stepped]
        steps = np.fromiter((r[4] for r in rows if r[6] is None), np.int64, len(lengths))
        ends = np.cumsum(lengths)
        ordinal = np.arange(ends[-1], dtype=np.int64) - np.repeat(ends - lengths, lengths) + 1
        offsets[np.repeat(stepped, points)] = np.repeat(last[stepped], lengths) - (
            np.repeat(lengths, lengths) - ordinal
        ) * np.repeat(steps, lengths)
    if not stepped.all():
        lengths = points[~stepped]
        deltas = _parse([r[6] for r in rows if r[6] is not None], np.int64)
        offsets[np.repeat(~stepped, points)] = _segment_cumsum(deltas, lengths)
    return codes, np.repeat(hours, points) + offsets, values


def percentile_cont(
    codes: np.ndarray, buckets: np.ndarray, values: np.ndarray, fraction: float
) -> list[tuple[int, int, float]]:
    """(group code, bucket, percentile_cont(fraction)) of every (group, bucket) with values."""
    if not len(values):
        return []
    order = np.lexsort((values, buckets, codes))
    ranked, codes, buckets = values[order], codes[order], buckets[order]
    change = (codes[1:] != codes[:-1]) | (buckets[1:] != buckets[:-1])
    starts = np.flatnonzero(np.concatenate(([True], change)))
    counts = np.diff(np.append(starts, len(ranked)))
    position = fraction * (counts - 1).astype(np.float64)
    first = np.floor(position)
    second = np.ceil(position)
    low = ranked[starts + first.astype(np.int64)]
    high = ranked[starts + second.astype(np.int64)]
    result = np.where(second > first, low + (position - first) * (high - low), low)
    return list(zip(codes[starts].tolist(), buckets[starts].tolist(), result.tolist(), strict=True))
