"""Evaluate a parsed PromQL expression at every step of a query, reading series from a source.

The evaluator walks the expression tree once; each node evaluates at all step times together
(see `values`). It reads samples only through a `Source`: the database for the API, a list in
memory for tests.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import promql_parser as pp

from . import aggregations, functions, operators, windows
from .errors import BadData, QueryTimeout, Unsupported
from .values import (
    NAME,
    Labels,
    Matrix,
    Samples,
    Scalar,
    String,
    Value,
    Vector,
    distinct,
    labels_of,
    names_dropped,
    without_name,
)


@dataclass(frozen=True)
class LabelMatcher:
    name: str
    op: str  # "=", "!=", "=~", "!~"
    value: str


class Source(Protocol):
    def select(self, matchers: list[LabelMatcher], start_ms: int, end_ms: int) -> list[Samples]:
        """Every series matching all `matchers`, with its samples in `(start_ms, end_ms]`.

        A counter series comes with `counter=True`, its increments as values and in `base`
        the sum of its increments at or before `start_ms`.
        """
        ...


# The parser's enums are not hashable: keyed by their text.
_MATCH_OPS = {
    "MatchOp.Equal": "=",
    "MatchOp.NotEqual": "!=",
    "MatchOp.Re": "=~",
    "MatchOp.NotRe": "!~",
}

_CARDINALITY = {
    "VectorMatchCardinality.OneToOne": "one-to-one",
    "VectorMatchCardinality.ManyToOne": "many-to-one",
    "VectorMatchCardinality.OneToMany": "one-to-many",
    "VectorMatchCardinality.ManyToMany": "many-to-many",
}

# Functions whose result keeps the metric name; every other one drops it.
_KEEP_NAME = frozenset(["last_over_time", "sort", "sort_desc", "label_replace", "label_join"])


def _ms(delta: Any) -> int:
    return round(delta.total_seconds() * 1000) if delta is not None else 0


def selector_matchers(node: Any) -> list[LabelMatcher]:
    matchers = node.matchers
    if matchers.or_matchers:
        raise Unsupported("selectors with 'or' between matcher sets are not supported")
    out = [LabelMatcher(m.name, _MATCH_OPS[str(m.op)], m.value) for m in matchers.matchers]
    if node.name and not any(m.name == NAME for m in out):
        out.insert(0, LabelMatcher(NAME, "=", node.name))
    return out


def vector_selectors(node: Any) -> Iterator[Any]:
    """Every vector selector of an expression, those of range selectors and subqueries included
    (what it will read, known before it is evaluated)."""
    if type(node).__name__ == "VectorSelector":
        yield node
        return
    for attribute in ("expr", "lhs", "rhs", "param", "vector_selector"):
        child = getattr(node, attribute, None)
        if child is not None:
            yield from vector_selectors(child)
    for child in getattr(node, "args", None) or ():
        yield from vector_selectors(child)


def running_totals(series: list[Samples]) -> list[Samples]:
    """Counter series as PromQL sees them: the running total of their increments."""
    out = []
    for samples in series:
        if samples.counter:
            values = samples.base + np.cumsum(samples.values)
            samples = Samples(samples.labels, samples.times, values, True, samples.base)
        out.append(samples)
    return out


class Evaluator:
    def __init__(
        self,
        source: Source,
        *,
        start_ms: int,
        end_ms: int,
        step_ms: int,
        lookback_ms: int = 300_000,
        subquery_step_ms: int = 60_000,
        deadline: float | None = None,
    ) -> None:
        self.source = source
        self.start_ms = start_ms
        self.end_ms = end_ms
        self.step_ms = step_ms
        self.lookback_ms = lookback_ms
        self.subquery_step_ms = subquery_step_ms
        self.deadline = deadline
        self.times = np.arange(start_ms, end_ms + 1, step_ms, dtype=np.int64)
        self.instant = start_ms == end_ms

    # -- entry point --------------------------------------------------------------------------

    def evaluate(self, node: Any) -> Value:
        value = self.eval(node, self.times)
        return value

    def eval(self, node: Any, times: np.ndarray) -> Value:
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise QueryTimeout("query timed out in expression evaluation")
        kind = type(node).__name__
        handler: Callable[[Any, np.ndarray], Value] | None = getattr(self, f"_eval_{kind}", None)
        if handler is None:
            raise Unsupported(f"expression {kind} is not supported")
        return handler(node, times)

    # -- leaves -------------------------------------------------------------------------------

    def _eval_NumberLiteral(self, node: Any, times: np.ndarray) -> Value:
        return Scalar(np.full(len(times), float(node.val)))

    def _eval_StringLiteral(self, node: Any, times: np.ndarray) -> Value:
        return String(node.val)

    def _eval_ParenExpr(self, node: Any, times: np.ndarray) -> Value:
        return self.eval(node.expr, times)

    def _eval_UnaryExpr(self, node: Any, times: np.ndarray) -> Value:
        value = self.eval(node.expr, times)
        if isinstance(value, Scalar):
            return Scalar(-value.values)
        if isinstance(value, Vector):
            return names_dropped(value, -value.values)
        raise BadData(
            "unary expression only allowed on expressions of type scalar or instant vector"
        )

    def _refs(self, node: Any, times: np.ndarray) -> np.ndarray:
        """The times a selector reads at: the step times, or its @ time, less its offset."""
        offset = _ms(node.offset)
        at = node.at
        if at is None:
            return times - offset
        if at.type == pp.AtModifierType.Start:
            fixed = self.start_ms
        elif at.type == pp.AtModifierType.End:
            fixed = self.end_ms
        else:
            fixed = round(at.at.timestamp() * 1000)
        return np.full(len(times), fixed - offset, dtype=np.int64)

    def _select(self, node: Any, start_ms: int, end_ms: int) -> list[Samples]:
        return running_totals(self.source.select(selector_matchers(node), start_ms, end_ms))

    def _eval_VectorSelector(self, node: Any, times: np.ndarray) -> Value:
        refs = self._refs(node, times)
        n = len(times)
        if not n:
            return Vector.empty(0)
        instants = getattr(self.source, "instants", None)
        found = instants(selector_matchers(node), refs, self.lookback_ms) if instants else None
        if found is not None:
            if not found:
                return Vector.empty(n)
            return Vector(
                [labels for labels, _, _, _ in found],
                np.array([values for _, values, _, _ in found], dtype=float),
                np.array([present for _, _, present, _ in found]),
                np.array([times for _, _, _, times in found]),
            )
        series = self._select(node, int(refs.min()) - self.lookback_ms, int(refs.max()))
        labels, values, present, stamps = [], [], [], []
        for samples in series:
            index = np.searchsorted(samples.times, refs, side="right") - 1
            safe = np.maximum(index, 0)
            if not len(samples.times):
                continue
            taken_times = samples.times[safe]
            here = (index >= 0) & (taken_times > refs - self.lookback_ms)
            if not here.any():
                continue
            labels.append(samples.labels)
            values.append(samples.values[safe])
            present.append(here)
            stamps.append(taken_times)
        if not labels:
            return Vector.empty(n)
        return Vector(labels, np.array(values, dtype=float), np.array(present), np.array(stamps))

    def _eval_MatrixSelector(self, node: Any, times: np.ndarray) -> Value:
        if not self.instant:
            raise BadData(
                'invalid expression type "range vector" for range query, must be Scalar or instant Vector'
            )
        series, ends, range_ms = self._range_input(node, times)
        return self._matrix(series, int(ends[0]), range_ms)

    def _eval_SubqueryExpr(self, node: Any, times: np.ndarray) -> Value:
        return self._eval_MatrixSelector(node, times)

    @staticmethod
    def _matrix(series: list[Samples], end: int, range_ms: int) -> Matrix:
        out = []
        for samples in series:
            keep = (samples.times > end - range_ms) & (samples.times <= end)
            if keep.any():
                out.append(Samples(samples.labels, samples.times[keep], samples.values[keep]))
        return Matrix(out)

    # -- range vectors ------------------------------------------------------------------------

    def _range_input(self, node: Any, times: np.ndarray) -> tuple[list[Samples], np.ndarray, int]:
        """The series a range function reads, the window end at each step, and the range."""
        while type(node).__name__ == "ParenExpr":
            node = node.expr
        kind = type(node).__name__
        if kind == "MatrixSelector":
            selector = node.vector_selector
            range_ms = _ms(node.range)
            ends = self._refs(selector, times)
            series = self._select(selector, int(ends.min()) - range_ms, int(ends.max()))
            return series, ends, range_ms
        if kind == "SubqueryExpr":
            return self._subquery(node, times)
        raise BadData(f"expected type range vector in call to function, got {kind}")

    def _subquery(self, node: Any, times: np.ndarray) -> tuple[list[Samples], np.ndarray, int]:
        range_ms = _ms(node.range)
        step = _ms(node.step) or self.subquery_step_ms
        ends = self._refs(node, times)
        first = int(ends.min()) - range_ms
        start = (first // step) * step
        if start <= first:
            start += step
        inner_times = np.arange(start, int(ends.max()) + 1, step, dtype=np.int64)
        value = self.eval(node.expr, inner_times)
        if isinstance(value, Scalar):
            value = Vector([()], value.values[None, :], np.ones((1, len(inner_times)), dtype=bool))
        if not isinstance(value, Vector):
            raise BadData("subquery is only allowed on instant vector or scalar expressions")
        series = [
            Samples(labels, inner_times[value.present[i]], value.values[i][value.present[i]])
            for i, labels in enumerate(value.labels)
        ]
        return series, ends, range_ms

    def _range_call(self, name: str, node: Any, args: list[Any], times: np.ndarray) -> Vector:
        matrix_arg = args[1] if name == "quantile_over_time" else args[0]
        scalar = None
        if name == "quantile_over_time":
            scalar = self._scalar_arg(args[0], times)
        elif name == "predict_linear":
            scalar = self._scalar_arg(args[1], times)
        pushed = self._pushed(name, matrix_arg, times)
        if pushed is not None:
            return pushed
        series, ends, range_ms = self._range_input(matrix_arg, times)
        if name == "absent_over_time":
            return self._absent(matrix_arg, series, ends, range_ms, times)
        keep_name = name in _KEEP_NAME
        many = windows.range_apply_many(name, series, ends, range_ms) if scalar is None else None
        labels, rows, presence = [], [], []
        for k, samples in enumerate(series):
            if many is not None:
                values, present = many[0][k], many[1][k]
            else:
                values, present = windows.range_apply(
                    name, samples, ends, range_ms, steps=times, scalar=scalar
                )
            if not present.any():
                continue
            labels.append(samples.labels if keep_name else without_name(samples.labels))
            rows.append(values)
            presence.append(present)
        if not labels:
            return Vector.empty(len(times))
        out = Vector(labels, np.array(rows, dtype=float), np.array(presence))
        return out if keep_name else distinct(out)

    def _pushed(self, name: str, node: Any, times: np.ndarray) -> Vector | None:
        """The range function answered by the source from its rollups, when it can."""
        windows_of = getattr(self.source, "windows", None)
        while type(node).__name__ == "ParenExpr":
            node = node.expr
        if windows_of is None or type(node).__name__ != "MatrixSelector":
            return None
        selector = node.vector_selector
        ends = self._refs(selector, times)
        found = windows_of(selector_matchers(selector), name, ends, _ms(node.range))
        if found is None:
            return None
        kept = [(labels, values, present) for labels, values, present in found if present.any()]
        if not kept:
            return Vector.empty(len(times))
        return distinct(
            Vector(
                [without_name(labels) for labels, _, _ in kept],
                np.array([values for _, values, _ in kept], dtype=float),
                np.array([present for _, _, present in kept]),
            )
        )

    def _absent(
        self, node: Any, series: list[Samples], ends: np.ndarray, range_ms: int, times: np.ndarray
    ) -> Vector:
        any_present = np.zeros(len(times), dtype=bool)
        for samples in series:
            lo, hi = windows.window_bounds(samples.times, ends, range_ms)
            any_present |= hi > lo
        while type(node).__name__ == "ParenExpr":
            node = node.expr
        selector = node.vector_selector if type(node).__name__ == "MatrixSelector" else None
        return self._absent_vector(selector, ~any_present)

    @staticmethod
    def _absent_vector(selector: Any, absent: np.ndarray) -> Vector:
        labels: Labels = ()
        if selector is not None:
            pairs: dict[str, str] = {}
            seen: set[str] = set()
            repeated: set[str] = set()
            for matcher in selector_matchers(selector):
                if matcher.name == NAME:
                    continue
                if matcher.name in seen:
                    repeated.add(matcher.name)
                seen.add(matcher.name)
                if matcher.op == "=":
                    pairs[matcher.name] = matcher.value
            labels = labels_of({k: v for k, v in pairs.items() if k not in repeated})
        if not absent.any():
            return Vector.empty(len(absent))
        return Vector([labels], np.ones((1, len(absent))), absent[None, :].copy())

    # -- calls ----------------------------------------------------------------------------------

    def _scalar_arg(self, node: Any, times: np.ndarray) -> np.ndarray:
        value = self.eval(node, times)
        if not isinstance(value, Scalar):
            raise BadData("expected a scalar argument")
        return value.values

    def _vector_arg(self, node: Any, times: np.ndarray) -> Vector:
        value = self.eval(node, times)
        if not isinstance(value, Vector):
            raise BadData("expected an instant vector argument")
        return value

    def _string_arg(self, node: Any, times: np.ndarray) -> str:
        value = self.eval(node, times)
        if not isinstance(value, String):
            raise BadData("expected a string argument")
        return value.value

    def _eval_Call(self, node: Any, times: np.ndarray) -> Value:
        name = node.func.name
        args = list(node.args)
        n = len(times)
        if name in windows.RANGE_FUNCTIONS:
            return self._range_call(name, node, args, times)
        if name in functions.MATH:
            return functions.MATH[name](self._vector_arg(args[0], times))
        if name == "time":
            return Scalar(times / 1000.0)
        if name == "vector":
            return Vector(
                [()], self._scalar_arg(args[0], times)[None, :], np.ones((1, n), dtype=bool)
            )
        if name == "scalar":
            vector = self._vector_arg(args[0], times)
            count = vector.present.sum(axis=0)
            values = np.full(n, np.nan)
            if len(vector):
                only = np.argmax(vector.present, axis=0)
                values = np.where(count == 1, vector.values[only, np.arange(n)], np.nan)
            return Scalar(values)
        if name == "timestamp":
            vector = self._vector_arg(args[0], times)
            stamps = (
                vector.times
                if vector.times is not None
                else np.broadcast_to(times, vector.values.shape)
            )
            return names_dropped(vector, stamps / 1000.0)
        if name == "absent":
            vector = self._vector_arg(args[0], times)
            arg = args[0]
            selector = arg if type(arg).__name__ == "VectorSelector" else None
            return self._absent_vector(
                selector, ~vector.present.any(axis=0) if len(vector) else np.ones(n, dtype=bool)
            )
        if name in ("sort", "sort_desc"):
            return functions.sort_rows(
                self._vector_arg(args[0], times), descending=name == "sort_desc"
            )
        if name == "round":
            to = self._scalar_arg(args[1], times) if len(args) > 1 else np.ones(n)
            return functions.round_to(self._vector_arg(args[0], times), to)
        if name == "clamp":
            return functions.clamp(
                self._vector_arg(args[0], times),
                self._scalar_arg(args[1], times),
                self._scalar_arg(args[2], times),
            )
        if name == "clamp_min":
            return functions.clamp(
                self._vector_arg(args[0], times), self._scalar_arg(args[1], times), None
            )
        if name == "clamp_max":
            return functions.clamp(
                self._vector_arg(args[0], times), None, self._scalar_arg(args[1], times)
            )
        if name in functions.DATE_FUNCTIONS:
            if args:
                vector = self._vector_arg(args[0], times)
            else:
                vector = Vector([()], (times / 1000.0)[None, :], np.ones((1, n), dtype=bool))
            return functions.date_part(name, vector)
        if name == "label_replace":
            return functions.label_replace(
                self._vector_arg(args[0], times),
                *(self._string_arg(arg, times) for arg in args[1:5]),
            )
        if name == "label_join":
            return functions.label_join(
                self._vector_arg(args[0], times),
                self._string_arg(args[1], times),
                self._string_arg(args[2], times),
                [self._string_arg(arg, times) for arg in args[3:]],
            )
        if name == "histogram_quantile":
            return functions.histogram_quantile(
                self._scalar_arg(args[0], times), self._vector_arg(args[1], times)
            )
        raise Unsupported(f"function {name}() is not supported")

    # -- aggregations -------------------------------------------------------------------------

    def _eval_AggregateExpr(self, node: Any, times: np.ndarray) -> Value:
        op = str(node.op)
        if op not in aggregations.ALL:
            raise Unsupported(f"aggregation {op}() is not supported")
        vector = self._vector_arg(node.expr, times)
        modifier = node.modifier
        names = list(modifier.labels) if modifier is not None else []
        without = modifier is not None and modifier.type == pp.AggModifierType.Without
        param: np.ndarray | str | None = None
        if op in ("topk", "bottomk", "quantile"):
            param = self._scalar_arg(node.param, times)
        elif op == "count_values":
            param = self._string_arg(node.param, times)
        return aggregations.aggregate(op, vector, names, without=without, param=param)

    # -- binary operators ---------------------------------------------------------------------

    def _eval_BinaryExpr(self, node: Any, times: np.ndarray) -> Value:
        op = str(node.op)
        modifier = node.modifier
        return_bool = bool(modifier is not None and modifier.return_bool)
        left = self.eval(node.lhs, times)
        right = self.eval(node.rhs, times)
        if isinstance(left, Scalar) and isinstance(right, Scalar):
            return operators.scalar_scalar(op, left, right, return_bool)
        if isinstance(left, Vector) and isinstance(right, Scalar):
            return operators.vector_scalar(op, left, right, swap=False, return_bool=return_bool)
        if isinstance(left, Scalar) and isinstance(right, Vector):
            return operators.vector_scalar(op, right, left, swap=True, return_bool=return_bool)
        if isinstance(left, Vector) and isinstance(right, Vector):
            return operators.vector_vector(op, left, right, self._matching(op, modifier))
        raise BadData(
            f"binary expression must contain only scalar and instant vector types, not {op}"
        )

    @staticmethod
    def _matching(op: str, modifier: Any) -> operators.Matching:
        if modifier is None:
            card = "many-to-many" if op in operators.SETS else "one-to-one"
            return operators.Matching(card=card)
        matching = modifier.matching
        on = matching is not None and matching.type == pp.LabelModifierType.Include
        return operators.Matching(
            card=_CARDINALITY[str(modifier.card)],
            on=on,
            labels=list(matching.labels) if matching is not None else [],
            include=list(modifier.group_labels or []),
            return_bool=bool(modifier.return_bool),
        )
