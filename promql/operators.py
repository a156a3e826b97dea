"""Binary operators: arithmetic, comparison (with and without `bool`) and set operators, between
scalars and vectors, with vector matching (`on`, `ignoring`, `group_left`, `group_right`).

Matching is decided once per pair of series (labels do not change between steps); whether a
pair yields a sample is then decided per step by the two series' presence. A match that would
be ambiguous at some step (two series on the "one" side, or two results with the same labels)
is an error, as Prometheus reports it for that step.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import ExecutionError
from .values import (
    NAME,
    Labels,
    Scalar,
    Vector,
    label_get,
    labels_drop,
    labels_keep,
    labels_of,
    names_dropped,
    without_name,
)

ARITHMETIC = frozenset(["+", "-", "*", "/", "%", "^", "atan2"])
COMPARISON = frozenset(["==", "!=", ">", "<", ">=", "<="])
SETS = frozenset(["and", "or", "unless"])


@dataclass
class Matching:
    card: str = "one-to-one"  # one-to-one, many-to-one, one-to-many, many-to-many
    on: bool = False
    labels: list[str] = field(default_factory=list)
    include: list[str] = field(default_factory=list)
    return_bool: bool = False


def apply(op: str, left: np.ndarray, right: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """`op` element-wise: (values, kept) where `kept` is a comparison's truth, else None."""
    with np.errstate(all="ignore"):
        if op == "+":
            return left + right, None
        if op == "-":
            return left - right, None
        if op == "*":
            return left * right, None
        if op == "/":
            return left / right, None
        if op == "%":
            return np.fmod(left, right), None  # Go's math.Mod: the sign of the dividend
        if op == "^":
            return np.power(left, right), None
        if op == "atan2":
            return np.arctan2(left, right), None
        if op == "==":
            return left, left == right
        if op == "!=":
            return left, left != right
        if op == ">":
            return left, left > right
        if op == "<":
            return left, left < right
        if op == ">=":
            return left, left >= right
        if op == "<=":
            return left, left <= right
    raise ExecutionError(f"operator {op!r} not allowed")


def scalar_scalar(op: str, left: Scalar, right: Scalar, return_bool: bool) -> Scalar:
    values, kept = apply(op, left.values, right.values)
    if kept is not None:
        if not return_bool:
            raise ExecutionError("comparisons between scalars must use BOOL modifier")
        values = kept.astype(float)
    return Scalar(values)


def vector_scalar(
    op: str, vector: Vector, scalar: Scalar, *, swap: bool, return_bool: bool
) -> Vector:
    """`vector op scalar`, or `scalar op vector` when `swap`."""
    right = scalar.values[None, :]
    left = vector.values
    values, kept = apply(op, right, left) if swap else apply(op, left, right)
    present = vector.present.copy()
    if kept is not None:
        values = left  # a comparison keeps the vector's own value, whichever side it is on
        if return_bool:
            values = kept.astype(float)
        else:
            present &= kept
    if kept is None or return_bool:
        return names_dropped(vector, values, present)
    return Vector(list(vector.labels), values, present).compact()


def signature(labels: Labels, matching: Matching) -> Labels:
    if matching.on:
        return labels_keep(labels, matching.labels)
    return labels_drop(labels, [*matching.labels, NAME])


def _result_labels(many: Labels, one: Labels, op: str, matching: Matching) -> Labels:
    labels = many
    if op in ARITHMETIC or matching.return_bool:
        labels = without_name(labels)
    if matching.card == "one-to-one":
        if matching.on:
            labels = labels_keep(labels, matching.labels)
        else:
            labels = labels_drop(labels, matching.labels)
    if matching.include:
        pairs = dict(labels)
        for name in matching.include:
            value = label_get(one, name)
            if value:
                pairs[name] = value
            else:
                pairs.pop(name, None)
        labels = labels_of(pairs)
    return labels


def _by_signature(vector: Vector, matching: Matching) -> dict[Labels, list[int]]:
    groups: dict[Labels, list[int]] = {}
    for i, labels in enumerate(vector.labels):
        groups.setdefault(signature(labels, matching), []).append(i)
    return groups


def vector_vector(op: str, left: Vector, right: Vector, matching: Matching) -> Vector:
    if op in SETS:
        return _set_operation(op, left, right, matching)
    if matching.card == "many-to-many":
        raise ExecutionError("many-to-many only allowed for set operators")
    n = left.values.shape[1]
    swapped = matching.card == "one-to-many"
    many, one = (right, left) if swapped else (left, right)
    one_groups = _by_signature(one, matching)
    # The "one" side may hold several series of a signature only at different steps.
    for signature_labels, members in one_groups.items():
        if len(members) > 1 and (one.present[members].sum(axis=0) > 1).any():
            side = "left" if swapped else "right"
            raise ExecutionError(
                f"found duplicate series for the match group {dict(signature_labels)} on the "
                f"{side} hand-side of the operation; many-to-many matching not allowed: "
                "matching labels must be unique on one side"
            )
    labels_out: list[Labels] = []
    values_out: list[np.ndarray] = []
    present_out: list[np.ndarray] = []
    # For one-to-one matching, the "many" side must not match one signature twice at a step.
    matched = np.zeros((0, n), dtype=bool)
    matched_signature: dict[Labels, int] = {}
    for i, labels in enumerate(many.labels):
        key = signature(labels, matching)
        for j in one_groups.get(key, ()):
            both = many.present[i] & one.present[j]
            if not both.any():
                continue
            left_values, right_values = (
                (one.values[j], many.values[i]) if swapped else (many.values[i], one.values[j])
            )
            if matching.card == "one-to-one":
                # Checked before a comparison filters: an ambiguous match is an error even
                # where the comparison would drop it.
                row = matched_signature.get(key)
                if row is None:
                    matched_signature[key] = len(matched)
                    matched = np.vstack([matched, both[None, :]])
                else:
                    if (matched[row] & both).any():
                        raise ExecutionError(
                            "multiple matches for labels: many-to-one matching must be explicit "
                            "(group_left/group_right)"
                        )
                    matched[row] |= both
            values, kept = apply(op, left_values, right_values)
            present = both
            if kept is not None:
                if matching.return_bool:
                    values = kept.astype(float)
                else:
                    present = both & kept
            labels_out.append(_result_labels(many.labels[i], one.labels[j], op, matching))
            values_out.append(values)
            present_out.append(present)
    if not labels_out:
        return Vector.empty(n)
    out = Vector(labels_out, np.array(values_out), np.array(present_out))
    seen: dict[Labels, np.ndarray] = {}
    for labels, present in zip(out.labels, out.present, strict=True):
        earlier = seen.get(labels)
        if earlier is not None:
            if (earlier & present).any():
                raise ExecutionError(
                    "multiple matches for labels: grouping labels must ensure unique matches"
                )
            seen[labels] = earlier | present
        else:
            seen[labels] = present
    return out.compact()


def _set_operation(op: str, left: Vector, right: Vector, matching: Matching) -> Vector:
    n = left.values.shape[1]
    right_present: dict[Labels, np.ndarray] = {}
    for j, labels in enumerate(right.labels):
        key = signature(labels, matching)
        right_present[key] = right_present.get(key, np.zeros(n, dtype=bool)) | right.present[j]
    if op in ("and", "unless"):
        present = left.present.copy()
        for i, labels in enumerate(left.labels):
            there = right_present.get(signature(labels, matching), np.zeros(n, dtype=bool))
            present[i] &= there if op == "and" else ~there
        return Vector(list(left.labels), left.values, present, left.times).compact()
    # or: every left sample, and the right samples whose signature no left series has at that step.
    left_present: dict[Labels, np.ndarray] = {}
    for i, labels in enumerate(left.labels):
        key = signature(labels, matching)
        left_present[key] = left_present.get(key, np.zeros(n, dtype=bool)) | left.present[i]
    right_kept = right.present.copy()
    for j, labels in enumerate(right.labels):
        right_kept[j] &= ~left_present.get(signature(labels, matching), np.zeros(n, dtype=bool))
    times = None
    if left.times is not None and right.times is not None:
        times = np.vstack([left.times, right.times])
    return Vector(
        list(left.labels) + list(right.labels),
        np.vstack([left.values, right.values]),
        np.vstack([left.present, right_kept]),
        times,
    ).compact()
