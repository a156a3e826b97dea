"""Aggregation operators (`sum by (job) (…)`, `topk`, `quantile`, …) over all steps at once.

Series are grouped once by their labels (`by` keeps the named labels, `without` drops them and
the metric name); each group is then reduced over its rows with numpy, every step in one call.
A group exists at a step where at least one of its series is present.
"""

from __future__ import annotations

import numpy as np

from . import sums
from .errors import ExecutionError, Unsupported
from .functions import _LABEL_NAME
from .values import NAME, Labels, Vector, labels_drop, labels_keep, labels_of
from .windows import quantile_sorted

SIMPLE = frozenset(["sum", "avg", "min", "max", "count", "group", "stddev", "stdvar"])
ALL = SIMPLE | {"topk", "bottomk", "quantile", "count_values"}


def group_key(labels: Labels, names: list[str], without: bool) -> Labels:
    if without:
        return labels_drop(labels, [*names, NAME])
    return labels_keep(labels, names)


def _groups(vector: Vector, names: list[str], without: bool) -> dict[Labels, list[int]]:
    groups: dict[Labels, list[int]] = {}
    for i, labels in enumerate(vector.labels):
        groups.setdefault(group_key(labels, names, without), []).append(i)
    return groups


def _reduce(op: str, values: np.ndarray, present: np.ndarray) -> np.ndarray:
    """`op` over the rows of one group, per step (absent samples ignored)."""
    count = present.sum(axis=0)
    with np.errstate(all="ignore"):
        if op == "sum":
            return sums.compensated_sum(values, present)
        if op == "count":
            return count.astype(float)
        if op == "group":
            return np.ones(values.shape[1])
        if op == "avg":
            return sums.prometheus_mean(values, present)
        if op in ("min", "max"):
            masked = np.where(present, values, np.nan)
            # fmin/fmax: NaN only where every present value is NaN, as Prometheus.
            return (np.fmin if op == "min" else np.fmax).reduce(masked, axis=0)
        if op in ("stddev", "stdvar"):
            mean = _mean(values, present, count)
            deviations = np.where(present, values - mean, 0.0)
            variance = (deviations * deviations).sum(axis=0) / count
            return np.sqrt(variance) if op == "stddev" else variance
    raise Unsupported(f"aggregation {op}() is not supported")


def _mean(values: np.ndarray, present: np.ndarray, count: np.ndarray) -> np.ndarray:
    """The mean of the present values; ±Inf and NaN propagate as in Prometheus."""
    with np.errstate(all="ignore"):
        return np.where(present, values, 0.0).sum(axis=0) / count


def aggregate(
    op: str,
    vector: Vector,
    names: list[str],
    *,
    without: bool,
    param: np.ndarray | str | None = None,
) -> Vector:
    n = vector.values.shape[1]
    if op in SIMPLE:
        groups = _groups(vector, names, without)
        if not groups:
            return Vector.empty(n)
        members = list(groups.values())
        depth = max(len(m) for m in members)
        if depth * len(members) > 2 * len(vector.labels):
            # Groups of very different sizes: each reduced alone (padding would cost more).
            rows = [_reduce(op, vector.values[m], vector.present[m]) for m in members]
            present = [vector.present[m].any(axis=0) for m in members]
            return Vector(list(groups), np.array(rows), np.array(present))
        # Every group at once: row k of group g is column block g of row k (absent where the
        # group has fewer rows), so each row is one addition for every group and step.
        index = np.full((depth, len(members)), -1)
        for g, rows_of in enumerate(members):
            index[: len(rows_of), g] = rows_of
        padded = np.maximum(index, 0)
        mask = vector.present[padded] & (index >= 0)[:, :, None]
        wide = (depth, len(members) * n)
        reduced = _reduce(op, vector.values[padded].reshape(wide), mask.reshape(wide))
        return Vector(list(groups), reduced.reshape(len(members), n), mask.any(axis=0))
    if op in ("topk", "bottomk"):
        assert isinstance(param, np.ndarray)
        return _top(vector, names, without, param, largest=op == "topk")
    if op == "quantile":
        assert isinstance(param, np.ndarray)
        return _quantile(vector, names, without, param)
    if op == "count_values":
        assert isinstance(param, str)
        return _count_values(vector, names, without, param)
    raise Unsupported(f"aggregation {op}() is not supported")


def _top(
    vector: Vector, names: list[str], without: bool, k: np.ndarray, *, largest: bool
) -> Vector:
    """topk/bottomk: each series kept at the steps where it ranks within k of its group.

    NaN ranks last either way, as in Prometheus's heaps.
    """
    present = np.zeros_like(vector.present)
    if np.isnan(k).any():
        raise ExecutionError("Parameter value is NaN")
    with np.errstate(invalid="ignore"):
        limit = np.where(np.isnan(k), 0, np.clip(k, 0, 2**31)).astype(np.int64)
    for members in _groups(vector, names, without).values():
        values = vector.values[members]
        mask = vector.present[members]
        nan = np.isnan(values)
        keys = np.where(nan, 0.0, -values if largest else values)
        # Order within each step: absent last, then NaN, then by value.
        order = np.lexsort((keys, nan, ~mask), axis=0)
        ranks = np.empty_like(order)
        np.put_along_axis(
            ranks, order, np.arange(len(members))[:, None].repeat(values.shape[1], 1), axis=0
        )
        keep = mask & (ranks < limit[None, :])
        present[members] = keep
    out = Vector(list(vector.labels), vector.values, present, vector.times).compact()
    if out.values.shape[1] == 1 and len(out):
        # An instant query lists the kept series best first, as Prometheus does.
        column = out.values[:, 0]
        nan = np.isnan(column)
        order = np.lexsort((np.where(nan, 0.0, -column if largest else column), nan))
        out = Vector([out.labels[i] for i in order], out.values[order], out.present[order])
    return out


def _quantile(vector: Vector, names: list[str], without: bool, phi: np.ndarray) -> Vector:
    n = vector.values.shape[1]
    labels, rows, presence = [], [], []
    for key, members in _groups(vector, names, without).items():
        values = vector.values[members]
        mask = vector.present[members]
        row = np.full(n, np.nan)
        for step in np.flatnonzero(mask.any(axis=0)):
            column = values[mask[:, step], step]
            nan = np.isnan(column)
            ordered = np.concatenate([column[nan], np.sort(column[~nan])])
            row[step] = quantile_sorted(float(phi[step]), ordered)
        labels.append(key)
        rows.append(row)
        presence.append(mask.any(axis=0))
    if not labels:
        return Vector.empty(n)
    return Vector(labels, np.array(rows), np.array(presence))


def format_value(value: float) -> str:
    """A float as Go's strconv.FormatFloat(v, 'f', -1, 64): shortest, never in exponent form."""
    if np.isnan(value):
        return "NaN"
    if np.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    text = np.format_float_positional(value, trim="-")
    return "0" if text == "-0" else text


def _count_values(vector: Vector, names: list[str], without: bool, label: str) -> Vector:
    if not _LABEL_NAME.match(label):
        raise ExecutionError(f"invalid label name {label!r}")
    n = vector.values.shape[1]
    counts: dict[Labels, np.ndarray] = {}
    for i, labels in enumerate(vector.labels):
        key = group_key(labels, names, without)
        for step in np.flatnonzero(vector.present[i]):
            out = labels_of({**dict(key), label: format_value(float(vector.values[i, step]))})
            row = counts.get(out)
            if row is None:
                row = counts[out] = np.zeros(n)
            row[step] += 1
    if not counts:
        return Vector.empty(n)
    rows = np.array(list(counts.values()))
    return Vector(list(counts), rows, rows > 0)
