"""The values a PromQL expression evaluates to, over all the steps of a query at once.

A query is evaluated at `n` step times (one for an instant query). Rather than evaluating each
step on its own, as Prometheus does, every node evaluates to arrays with one column per step:

- `Scalar`: `values[n]`;
- `Vector` (an instant vector at every step): one row per series, `values[L, n]` and
  `present[L, n]` (a series has no sample at a step where `present` is false);
- `String`: one string;
- `Matrix`: the raw samples of a range selector, only as the answer to an instant query
  (`x[5m]`); as a function's argument a range selector is read as `Samples` per series.

Labels are a tuple of sorted `(name, value)` pairs, without empty values: hashable, so
series can be grouped and matched by dictionaries.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from .errors import ExecutionError

Labels = tuple[tuple[str, str], ...]

NAME = "__name__"


def labels_of(pairs: Mapping[str, str] | Iterable[tuple[str, str]]) -> Labels:
    """Labels from a mapping or pairs: sorted by name, empty values left out."""
    items = pairs.items() if isinstance(pairs, Mapping) else pairs
    return tuple(sorted((k, v) for k, v in items if v != ""))


def label_get(labels: Labels, name: str) -> str:
    for key, value in labels:
        if key == name:
            return value
    return ""


def without_name(labels: Labels) -> Labels:
    if labels and labels[0][0] == NAME:  # "__name__" sorts before any label starting in a letter
        return labels[1:]
    return tuple(pair for pair in labels if pair[0] != NAME)


def labels_keep(labels: Labels, names: Iterable[str]) -> Labels:
    keep = set(names)
    return tuple(pair for pair in labels if pair[0] in keep)


def labels_drop(labels: Labels, names: Iterable[str]) -> Labels:
    drop = set(names)
    return tuple(pair for pair in labels if pair[0] not in drop)


@dataclass
class Scalar:
    values: np.ndarray  # float64[n]


@dataclass
class String:
    value: str


@dataclass
class Vector:
    labels: list[Labels]
    values: np.ndarray  # float64[L, n]
    present: np.ndarray  # bool[L, n]
    # The samples' own times (ms) where the series came straight from a selector, so that
    # timestamp(x) answers the sample's time rather than the step's.
    times: np.ndarray | None = None

    @classmethod
    def empty(cls, n: int) -> Vector:
        return cls([], np.empty((0, n)), np.zeros((0, n), dtype=bool))

    def __len__(self) -> int:
        return len(self.labels)

    def compact(self) -> Vector:
        """The series present at least once; rows with the same labels merged (the caller
        guarantees they are never present at the same step)."""
        rows: dict[Labels, int] = {}
        keep: list[int] = []
        merges: list[tuple[int, int]] = []
        for i, labels in enumerate(self.labels):
            if not self.present[i].any():
                continue
            j = rows.get(labels)
            if j is None:
                rows[labels] = i
                keep.append(i)
            else:
                merges.append((j, i))
        if not merges and len(keep) == len(self.labels):
            return self
        values = self.values.copy()
        present = self.present.copy()
        times = None if self.times is None else self.times.copy()
        for j, i in merges:
            mask = present[i]
            values[j, mask] = values[i, mask]
            present[j] |= mask
            if times is not None:
                times[j, mask] = times[i, mask]
        return Vector(
            [self.labels[i] for i in keep],
            values[keep],
            present[keep],
            None if times is None else times[keep],
        )


def distinct(vector: Vector) -> Vector:
    """Rows with equal labels merged; an error where two of them are present at one step."""
    seen: dict[Labels, np.ndarray] = {}
    for labels, present in zip(vector.labels, vector.present, strict=True):
        earlier = seen.get(labels)
        if earlier is not None and (earlier & present).any():
            raise ExecutionError("vector cannot contain metrics with the same labelset")
        seen[labels] = present if earlier is None else earlier | present
    return vector.compact() if len(seen) != len(vector.labels) else vector


def names_dropped(
    vector: Vector, values: np.ndarray | None = None, present: np.ndarray | None = None
) -> Vector:
    """`vector` (with new values or presence, if given) without metric names."""
    return distinct(
        Vector(
            [without_name(labels) for labels in vector.labels],
            vector.values if values is None else values,
            vector.present if present is None else present,
        )
    )


@dataclass
class Samples:
    """The raw samples of one series: times in ms (sorted) and values.

    `base` is what a counter had counted before the first of these samples (the sum of its
    older increments), so that its running total is `base + cumsum(increments)`; for gauges it
    is 0 and unused. `counter` marks a series whose values are running totals of increments:
    `increase` and `rate` over it are exact, not extrapolated.
    """

    labels: Labels
    times: np.ndarray  # int64[k], ms
    values: np.ndarray  # float64[k]
    counter: bool = False
    base: float = 0.0


@dataclass
class Matrix:
    series: list[Samples] = field(default_factory=list)


Value = Scalar | String | Vector | Matrix
