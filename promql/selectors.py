"""Reads of the Prometheus query API: the series a selector matches and their samples.

`DatabaseSource` is what the evaluator reads through (promql.evaluator.Source). It lists the
candidate metrics and series in SQL (promql.storage), matches labels in Python with RE2, and
reads the points of the matched series only. A key's namespaces bound every read: a metric
outside them does not exist here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import promql_parser as pp
import re2
from django.conf import settings

from glowing_fiesta.db import replica

from . import hours, storage
from .errors import BadData, TooManySeries
from .evaluator import LabelMatcher, selector_matchers
from .names import label_name, promql_name, series_labels
from .values import NAME, Labels, Samples, label_get
from .windows import Rollups, rollup_apply, rollup_pushable, segment_reduce, shifted_series

POSITIVE = frozenset(["=", "=~"])


def _compile(matcher: LabelMatcher) -> re2._Regexp | None:
    if "~" not in matcher.op:
        return None
    try:
        return re2.compile(f"^(?:{matcher.value})$")
    except re2.error as exc:
        raise BadData(f"invalid regular expression {matcher.value!r}: {exc}") from None


def _accepts(matcher: LabelMatcher, regex: re2._Regexp | None, value: str) -> bool:
    if regex is None:
        equal = value == matcher.value
        return equal if matcher.op == "=" else not equal
    found = regex.match(value) is not None
    return found if matcher.op == "=~" else not found


@dataclass(frozen=True)
class SeriesRef:
    id: int
    metric_id: int
    labels: Labels
    counter: bool


def _joined(found: list, column: int, dtype: type) -> np.ndarray:
    """Column `column` of every series found, in order, as one array (each series' column a
    list of pieces)."""
    parts = [piece for f in found if f is not None for piece in f[column]]
    return np.concatenate(parts).astype(dtype, copy=False) if parts else np.empty(0, dtype=dtype)


def _rollups_apply(
    name: str,
    read: list[tuple | None],
    edges: list[tuple | None],
    shifts: np.ndarray,
    flat_ends: np.ndarray,
    range_ms: int,
) -> tuple[np.ndarray, np.ndarray] | None:
    """rollup_apply over several series at once: their rollups (`read`: bucket starts, counts,
    sums, mins, maxes, each a list of pieces in order) and points on window edges (`edges`:
    times, values, likewise), each series' times moved by its `shifts` entry and its window ends
    among `flat_ends` (windows.shifted_series); (values, present), a row per series, or None
    where the raw points must be read."""
    lengths = [sum(map(len, r[0])) if r is not None else 0 for r in read]
    edge_lengths = [sum(map(len, e[0])) if e is not None else 0 for e in edges]
    rollups = Rollups(
        _joined(read, 0, np.int64) + np.repeat(shifts, lengths),
        _joined(read, 1, np.int64),
        _joined(read, 2, float),
        _joined(read, 3, float),
        _joined(read, 4, float),
        _joined(edges, 0, np.int64) + np.repeat(shifts, edge_lengths),
        _joined(edges, 1, float),
    )
    result = rollup_apply(name, rollups, flat_ends, range_ms)
    if result is None:
        return None
    values, present = result
    return values.reshape(len(shifts), -1), present.reshape(len(shifts), -1)


class DatabaseSource:
    """The store as the evaluator sees it, for one query and one key's namespaces."""

    def __init__(self, *, namespaces: Sequence[str] = (), max_series: int = 10_000) -> None:
        self.namespaces = tuple(namespaces)
        self.max_series = max_series
        self._refs: dict[tuple[LabelMatcher, ...], list[SeriesRef]] = {}
        # named_series answers by name: read ahead (series_reads) or on first use.
        self._named: dict[str, list[tuple]] = {}

    def series_reads(self, selectors: Sequence[Sequence[LabelMatcher]]) -> list[storage.Read]:
        """The series lookups of `selectors` that name their metric, as reads to send before
        evaluating (with the transaction's first round trip); series() then uses their answers."""
        names = {
            m.value for matchers in selectors for m in matchers if m.name == NAME and m.op == "="
        }
        return [self._named_read(name) for name in sorted(names)]

    def _named_read(self, name: str) -> storage.Read:
        read = storage.named_series(name=name, namespaces=self.namespaces)
        return replace(read, decode=lambda rows: self._named.setdefault(name, read.decode(rows)))

    def series(self, matchers: Sequence[LabelMatcher]) -> list[SeriesRef]:
        """The series every matcher accepts (a missing label counts as the empty value)."""
        key = tuple(matchers)
        found = self._refs.get(key)
        if found is not None:
            return found
        compiled = [(m, _compile(m)) for m in matchers]
        names = [(m, r) for m, r in compiled if m.name == NAME]
        labels = [(m, r) for m, r in compiled if m.name != NAME]
        equal = next((m.value for m, _ in names if m.op == "="), None)
        if equal is not None:
            rows = self._named.get(equal)
            if rows is None:
                rows = storage.one(self._named_read(equal))
            candidates = [(mid, name, kind) for mid, name, kind, _, _ in rows]
            listed = [(sid, mid, tags) for mid, _, _, sid, tags in rows]
        else:
            candidates = storage.one(
                storage.metrics_candidates(name=None, namespaces=self.namespaces)
            )
            listed = None
        metrics = {}
        for metric_id, name, kind in candidates:
            mapped = promql_name(name)
            if all(
                (_accepts(m, r, mapped) or _accepts(m, r, name))
                if m.op in POSITIVE
                else (_accepts(m, r, mapped) and _accepts(m, r, name))
                for m, r in names
            ):
                metrics[metric_id] = (name, kind == "counter")
        if listed is None:
            listed = storage.one(storage.series_of(list(metrics)))
        refs = []
        for series_id, metric_id, tags in listed:
            if metric_id not in metrics:
                continue
            name, counter = metrics[metric_id]
            series_labels_ = series_labels(name, tags)
            if all(_accepts(m, r, label_get(series_labels_, m.name)) for m, r in labels):
                refs.append(SeriesRef(series_id, metric_id, series_labels_, counter))
                if len(refs) > self.max_series:
                    raise TooManySeries(
                        f"the selector matches more than {self.max_series} series "
                        "(PROMQL_MAX_SERIES); add label matchers to narrow it"
                    )
        # In label order, as Prometheus's index returns series: ties in topk, bottomk and
        # sort then fall the same way.
        refs.sort(key=lambda ref: ref.labels)
        self._refs[key] = refs
        return refs

    def select(self, matchers: list[LabelMatcher], start_ms: int, end_ms: int) -> list[Samples]:
        refs = self.series(matchers)
        if not refs:
            return []
        by_id = {ref.id: ref for ref in refs}
        metric_ids = sorted({ref.metric_id for ref in refs})
        after = storage.ms_time(start_ms)
        counters = [ref.id for ref in refs if ref.counter]
        rows, (bases,) = hours.points_between(
            metric_ids=metric_ids,
            series_ids=list(by_id),
            after_ms=start_ms,
            until_ms=end_ms,
            also=[
                storage.counter_totals_until(
                    metric_ids=metric_ids, series_ids=counters, until=after
                )
            ],
        )
        out = []
        for series_id, times, values in rows:
            ref = by_id[series_id]
            out.append(
                Samples(ref.labels, times, values, counter=ref.counter, base=bases.get(ref.id, 0.0))
            )
        out.sort(key=lambda samples: samples.labels)
        return out

    def windows(
        self, matchers: list[LabelMatcher], name: str, ends: np.ndarray, range_ms: int
    ) -> list[tuple[Labels, np.ndarray, np.ndarray]] | None:
        """`name` over every matched series from rollups, where their buckets tile the windows
        (the window ends and the range whole multiples of an hour, 15 minutes or a minute) and
        `name` is one rollups answer; None when the raw points must be read instead."""
        if not (rollup_pushable(name, counter=True) or rollup_pushable(name, counter=False)):
            return None
        refs = self.series(matchers)
        if not all(rollup_pushable(name, counter=ref.counter) for ref in refs):
            return None
        bucket = next(
            (b for b in storage.ROLLUP_TABLES if range_ms % b == 0 and not (ends % b).any()), None
        )
        if bucket is None:
            return None
        if not refs:
            return []
        ids = [ref.id for ref in refs]
        metric_ids = sorted({ref.metric_id for ref in refs})
        first, last = int(ends.min()) - range_ms, int(ends.max())
        edge_times = np.union1d(ends, ends - range_ms).tolist()
        if bucket == 60_000:
            read, edges = hours.minute_windows(
                metric_ids=metric_ids,
                series_ids=ids,
                after_ms=first,
                before_ms=last,
                edge_times=edge_times,
            )
        else:
            read, probed = storage.run(
                storage.rollups_between(
                    bucket_ms=bucket,
                    series_ids=ids,
                    after=storage.ms_time(first),
                    before=storage.ms_time(last),
                ),
                storage.points_at(metric_ids=metric_ids, series_ids=ids, times_ms=edge_times),
            )
            edges = {row[0]: row[1:] for row in probed}
            read = [(row[0], *([column] for column in row[1:6])) for row in read]
        rows = {row[0]: row[1:] for row in read}
        edges = {sid: ([times], [values]) for sid, (times, values) in edges.items()}
        out = []
        # Many series at once, in one sorted array (windows.shifted_series).
        for start, stop, shifts, flat_ends in shifted_series(len(refs), ends, first, last):
            part = refs[start:stop]
            result = _rollups_apply(
                name,
                [rows.get(ref.id) for ref in part],
                [edges.get(ref.id) for ref in part],
                shifts,
                flat_ends,
                range_ms,
            )
            if result is None:
                return None
            values, present = result
            out.extend((ref.labels, values[k], present[k]) for k, ref in enumerate(part))
        return out

    def instants(
        self, matchers: list[LabelMatcher], refs_ms: np.ndarray, lookback_ms: int
    ) -> list[tuple[Labels, np.ndarray, np.ndarray, np.ndarray]] | None:
        """Each matched series' latest sample at or before every time of `refs_ms` within the
        lookback, from the rollups' latest points, where every time is a whole multiple of a
        15-minute bucket (the tables keeping latest points); None when the raw points must be read
        instead.

        The latest sample at or before `t` is a point exactly at `t` (read by one index probe;
        it lies in the bucket that starts at `t`) or else the latest point of the last bucket
        that starts before `t`. A counter's running total at `t` is its total before the span
        plus the sums of the buckets before `t` and the increments exactly at `t`.
        """
        bucket = next((b for b in storage.LATEST_TABLES if not (refs_ms % b).any()), None)
        if bucket is None:
            return None
        refs = self.series(matchers)
        if not refs:
            return []
        ids = [ref.id for ref in refs]
        metric_ids = sorted({ref.metric_id for ref in refs})
        first = (int(refs_ms.min()) - lookback_ms) // bucket * bucket
        last = int(refs_ms.max())
        counters = [ref.id for ref in refs if ref.counter]
        read, probed, bases = storage.run(
            storage.rollups_between(
                bucket_ms=bucket,
                series_ids=ids,
                after=storage.ms_time(first),
                before=storage.ms_time(last),
                latest=True,
            ),
            storage.points_at(
                metric_ids=metric_ids, series_ids=ids, times_ms=sorted({int(t) for t in refs_ms})
            ),
            storage.counter_totals_until(
                metric_ids=metric_ids,
                series_ids=counters,
                until=storage.ms_time(first),
                inclusive=False,
            ),
        )
        rows = {row[0]: row[1:] for row in read}
        if any((row[6] == storage.UNKNOWN_MS).any() for row in rows.values()):
            return None  # buckets written before their latest points were kept
        edges = {row[0]: row[1:] for row in probed}
        out = []
        for ref in refs:
            buckets, _, sums, _, _, lasts, last_ats = rows.get(ref.id, ([],) * 7)
            starts = np.asarray(buckets, dtype=np.int64)
            index = np.searchsorted(starts, refs_ms, side="left") - 1
            safe = np.maximum(index, 0)
            before = index >= 0
            latest_at = np.where(
                before, np.asarray(last_ats if len(last_ats) else [0], dtype=np.int64)[safe], 0
            )
            at_times, at_values = edges.get(ref.id, ([], []))
            at_times = np.asarray(at_times, dtype=np.int64)
            at_values = np.asarray(at_values, dtype=float)
            e_lo = np.searchsorted(at_times, refs_ms, side="left")
            e_hi = np.searchsorted(at_times, refs_ms, side="right")
            on_edge = e_hi > e_lo
            if ref.counter:
                running = np.concatenate([[0.0], np.cumsum(np.asarray(sums, dtype=float))])
                edge_sums = (
                    np.where(on_edge, segment_reduce(np.add, at_values, e_lo, e_hi), 0.0)
                    if len(at_values)
                    else np.zeros(len(refs_ms))
                )
                values = bases.get(ref.id, 0.0) + running[index + 1] + edge_sums
            else:
                latest = np.where(
                    before, np.asarray(lasts if len(lasts) else [0.0], dtype=float)[safe], np.nan
                )
                edge_last = (
                    np.append(at_values, np.nan)[np.maximum(e_hi - 1, 0)]
                    if len(at_values)
                    else latest
                )
                values = np.where(on_edge, edge_last, latest)
            present = on_edge | (before & (latest_at > refs_ms - lookback_ms))
            times = np.where(on_edge, refs_ms, latest_at)
            if present.any():
                out.append((ref.labels, values, present, times))
        return out

    def series_in_range(
        self, matchers: Sequence[LabelMatcher], start_ms: int, end_ms: int
    ) -> list[Labels]:
        refs = self.series(matchers)
        alive = storage.series_with_data(
            series_ids=[ref.id for ref in refs],
            after=storage.ms_time(start_ms),
            until=storage.ms_time(end_ms),
        )
        return [ref.labels for ref in refs if ref.id in alive]


_LABEL_NAME = re2.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def _match_selectors(matches: Sequence[str]) -> list[list[LabelMatcher]]:
    """Each `match[]` parsed as a series selector, or BadData naming it."""
    out = []
    for text in matches:
        try:
            node = pp.parse(text)
        except ValueError as exc:
            raise BadData(f'invalid parameter "match[]": {exc}') from None
        if type(node).__name__ != "VectorSelector":
            raise BadData(f'invalid parameter "match[]": {text[:80]!r} is not a series selector')
        out.append(selector_matchers(node))
    return out


@replica.replica_reads
def series_find(
    *, matches: Sequence[str], start_s: float | None, end_s: float | None, namespaces: Sequence[str]
) -> list[Labels]:
    """The label sets of the series any `match[]` selects (with data in the range, if given)."""
    source = DatabaseSource(namespaces=namespaces, max_series=settings.PROMQL_MAX_SERIES)
    found: set[Labels] = set()
    for matchers in _match_selectors(matches):
        if start_s is None and end_s is None:
            found.update(ref.labels for ref in source.series(matchers))
        else:
            start = round((start_s if start_s is not None else 0.0) * 1000)
            end = round((end_s if end_s is not None else 4102444800.0) * 1000)
            found.update(source.series_in_range(matchers, start, end))
    return sorted(found)


@replica.replica_reads
def label_names(
    *, matches: Sequence[str], start_s: float | None, end_s: float | None, namespaces: Sequence[str]
) -> list[str]:
    if matches:
        series = series_find(matches=matches, start_s=start_s, end_s=end_s, namespaces=namespaces)
        return sorted({name for labels in series for name, _ in labels})
    names = {label_name(key) for key in storage.tag_keys(namespaces=namespaces)}
    if storage.one(storage.metrics_candidates(name=None, namespaces=namespaces)):
        names.add(NAME)
    return sorted(names)


@replica.replica_reads
def label_values(
    *,
    name: str,
    matches: Sequence[str],
    start_s: float | None,
    end_s: float | None,
    namespaces: Sequence[str],
) -> list[str]:
    if not _LABEL_NAME.match(name):
        raise BadData(f'invalid label name: "{name[:80]}"')
    if matches:
        series = series_find(matches=matches, start_s=start_s, end_s=end_s, namespaces=namespaces)
        return sorted({value for labels in series for key, value in labels if key == name})
    if name == NAME:
        return sorted(
            {
                promql_name(metric)
                for _, metric, _ in storage.one(
                    storage.metrics_candidates(name=None, namespaces=namespaces)
                )
            }
        )
    return sorted(set(storage.tag_values(label=name, namespaces=namespaces)))


@replica.replica_reads
def metadata(*, metric: str | None, namespaces: Sequence[str]) -> dict[str, list[dict[str, str]]]:
    """Each metric's type as Prometheus names it (counter or gauge), for Grafana's builder."""
    out: dict[str, list[dict[str, str]]] = {}
    for _, name, kind in storage.one(
        storage.metrics_candidates(name=metric, namespaces=namespaces)
    ):
        mapped = promql_name(name)
        if metric is not None and metric not in (mapped, name):
            continue
        entry = {"type": "counter" if kind == "counter" else "gauge", "help": "", "unit": ""}
        if entry not in out.setdefault(mapped, []):
            out[mapped].append(entry)
    return out
