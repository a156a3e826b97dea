"""Raw points of recent whole hours, kept in the web process for the queries that read them.

A dashboard asks for the same hours again and again (Grafana refreshes a panel every 30 s to a
minute): a 6-hour panel at a 15-second step reads 36,000 raw points, about 20 ms of PostgreSQL
each time (docs/PERFORMANCE.md). Points are only ever added, never changed, and a point and its
hour rollup's count are written in one transaction. So a series' hour kept here is still whole
exactly while the hour rollup's count equals the points kept: one read of the (series, hour)
counts, a row per series, checks every hour of a panel. An hour whose count moved (the current
one, a late write, a delete) is read again; the answer never differs from one read afresh.

What is kept: whole UTC hours inside a query's range, no older than RETENTION_DAYS - 1 days
(retention drops whole days past RETENTION_DAYS, so a kept hour is never one retention may have
removed), up to PROMQL_HOURS_CACHE_POINTS points per process, the least recently used let go
first. The partial hours at the range's ends are read every time.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from datetime import timedelta

import numpy as np
from django.conf import settings

from . import storage

HOUR_MS = 3_600_000
DAY_MS = 86_400_000

# (kind, series_id, hour start in ms) -> (the hour's count it was read at, its size, its arrays);
# kind "points" (times in ms, values) or "minutes" (the minute rollups' columns). The size, in
# elements of 16 bytes, is what PROMQL_HOURS_CACHE_POINTS bounds.
_kept: OrderedDict[tuple[str, int, int], tuple[int, int, tuple]] = OrderedDict()
_held = 0
_lock = threading.Lock()


def hours_clear() -> None:
    """Forget every kept hour (a test's database is rolled back under it)."""
    global _held
    with _lock:
        _kept.clear()
        _held = 0


def _keep(key: tuple[str, int, int], count: int, size: int, arrays: tuple) -> None:
    global _held
    with _lock:
        old = _kept.pop(key, None)
        if old is not None:
            _held -= old[1]
        if size > settings.PROMQL_HOURS_CACHE_POINTS:
            return
        _kept[key] = (count, size, arrays)
        _held += size
        while _held > settings.PROMQL_HOURS_CACHE_POINTS:
            _, (_, dropped, _) = _kept.popitem(last=False)
            _held -= dropped


def _oldest_ms() -> int:
    """The oldest hour start that may be kept: retention drops whole days past RETENTION_DAYS,
    never a day younger than RETENTION_DAYS - 1 days."""
    oldest = int(time.time() * 1000) - max(settings.RETENTION_DAYS - 1, 0) * DAY_MS
    return -(-oldest // HOUR_MS) * HOUR_MS


def _hour_cuts(times_ms: np.ndarray) -> np.ndarray:
    """Where ordered times pass into the next UTC hour: np.split's indexes, one array an hour."""
    return np.flatnonzero(np.diff(times_ms // HOUR_MS)) + 1


def _counts(series_ids: Sequence[int], first: int, end: int) -> storage.Read:
    return storage.hour_counts(
        series_ids=series_ids, first=storage.ms_time(first), end=storage.ms_time(end)
    )


def _lookup(
    kind: str, counts: dict[tuple[int, int], int]
) -> tuple[dict[int, list[tuple[int, tuple]]], list[tuple[int, int]]]:
    """The kept hours of `kind` whose `counts` (the hours' counts as read now) are unchanged, as
    {series_id: [(hour, arrays)]}, and the (series_id, hour) pairs with points to read again."""
    pieces: dict[int, list[tuple[int, tuple]]] = {}
    missing = []
    with _lock:
        for (sid, hour), count in counts.items():
            key = (kind, sid, hour)
            found = _kept.get(key)
            if found is None or found[0] != count:
                missing.append((sid, hour))
            else:
                _kept.move_to_end(key)
                pieces.setdefault(sid, []).append((hour, found[2]))
    return pieces, missing


def points_between(
    *,
    metric_ids: Sequence[int],
    series_ids: Sequence[int],
    after_ms: int,
    until_ms: int,
    also: Sequence[storage.Read] = (),
) -> tuple[list[tuple[int, np.ndarray, np.ndarray]], list]:
    """storage.points_between over `(after_ms, until_ms]`, its whole recent hours from the
    process where their counts say they are unchanged; and the answers of the reads `also`,
    sent in the same round trip as the counts and the partial hours."""
    # Whole hours [first, end): every point of them is in (after, until].
    first = max((after_ms // HOUR_MS + 1) * HOUR_MS, _oldest_ms())
    end = until_ms // HOUR_MS * HOUR_MS
    if not settings.PROMQL_HOURS_CACHE_POINTS or end <= first or not series_ids:
        whole = storage.points_between(
            metric_ids=metric_ids,
            series_ids=series_ids,
            after=storage.ms_time(after_ms),
            until=storage.ms_time(until_ms),
        )
        rows, *answers = storage.run(whole, *also)
        return rows, answers
    # The partial hours at both ends, read every time: (after, first) and [end, until].
    tick = timedelta(microseconds=1)
    edges = [
        (order, edge_after, edge_until)
        for order, edge_after, edge_until in (
            (after_ms, storage.ms_time(after_ms), storage.ms_time(first) - tick),
            (end, storage.ms_time(end) - tick, storage.ms_time(until_ms)),
        )
        if edge_until > edge_after
    ]
    counts, *answers = storage.run(
        _counts(series_ids, first, end),
        *also,
        *(
            storage.points_between(
                metric_ids=metric_ids, series_ids=series_ids, after=edge_after, until=edge_until
            )
            for _, edge_after, edge_until in edges
        ),
    )
    answers, edge_rows = answers[: len(also)], answers[len(also) :]
    pieces, missing = _lookup("points", counts)
    if missing:
        hours = [hour for _, hour in missing]
        wanted = set(missing)
        for sid, hour, times, values in storage.one(
            storage.points_by_hour(
                metric_ids=metric_ids,
                series_ids=sorted({sid for sid, _ in missing}),
                first=storage.ms_time(min(hours)),
                end=storage.ms_time(max(hours) + HOUR_MS),
            )
        ):
            if (sid, hour) in wanted:
                _keep(("points", sid, hour), len(times), len(times), (times, values))
                pieces.setdefault(sid, []).append((hour, (times, values)))
    for (order, _, _), rows in zip(edges, edge_rows, strict=True):
        for sid, times, values in rows:
            pieces.setdefault(sid, []).append((order, (times, values)))
    out = []
    for sid, parts in pieces.items():
        parts.sort(key=lambda part: part[0])
        times = np.concatenate([p[1][0] for p in parts])
        if len(times):
            out.append((sid, times, np.concatenate([p[1][1] for p in parts])))
    return out, answers


def minute_windows(
    *,
    metric_ids: Sequence[int],
    series_ids: Sequence[int],
    after_ms: int,
    before_ms: int,
    edge_times: Sequence[int],
) -> tuple[list[tuple], dict[int, tuple[np.ndarray, np.ndarray]]]:
    """What a range function pushed down to the minute rollups reads: storage.rollups_between of
    the minute rollups over `[after_ms, before_ms)` (no latest points), each of its five columns
    as a list of pieces in order (hours kept and read, left for the caller to join once), and
    storage.points_at of `edge_times` (whole minutes) as {series_id: (times, values)}. A kept
    hour holds its minute rollups and its points that lie exactly on a minute, and is used while
    its count is unchanged: an hour's minutes and points only change with a new point of that
    hour."""
    first = max(-(-after_ms // HOUR_MS) * HOUR_MS, _oldest_ms())
    end = before_ms // HOUR_MS * HOUR_MS

    def read(after: int, before: int, ids: Sequence[int]) -> storage.Read:
        return storage.rollups_between(
            bucket_ms=60_000,
            series_ids=ids,
            after=storage.ms_time(after),
            before=storage.ms_time(before),
        )

    def probe(ids: Sequence[int], times: Sequence[int]) -> storage.Read:
        return storage.points_at(metric_ids=metric_ids, series_ids=ids, times_ms=times)

    if not settings.PROMQL_HOURS_CACHE_POINTS or end <= first or not series_ids:
        rows, probed = storage.run(
            read(after_ms, before_ms, series_ids), probe(series_ids, edge_times)
        )
        pieces_of = [(row[0], *([column] for column in row[1:6]), *row[6:]) for row in rows]
        return pieces_of, {sid: (t, v) for sid, t, v in probed}
    wanted_times = np.asarray(sorted(edge_times), dtype=np.int64)
    outside = wanted_times[(wanted_times < first) | (wanted_times >= end)].tolist()
    # The partial hours at both ends, read every time: [after, first) and [end, before).
    edges = [
        (order, edge_after, edge_before)
        for order, edge_after, edge_before in ((after_ms, after_ms, first), (end, end, before_ms))
        if edge_before > edge_after
    ]
    counts, probed, *edge_rows = storage.run(
        _counts(series_ids, first, end),
        probe(series_ids, outside),
        *(read(edge_after, edge_before, series_ids) for _, edge_after, edge_before in edges),
    )
    pieces, missing = _lookup("minutes", counts)
    if missing:
        wanted = set(missing)
        hours = [hour for _, hour in missing]
        ids = sorted({sid for sid, _ in missing})
        low, high = min(hours), max(hours) + HOUR_MS
        on_minutes: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
        found_on, found_rows = storage.run(
            probe(ids, range(low, high, 60_000)), read(low, high, ids)
        )
        for sid, times, values in found_on:
            cuts = _hour_cuts(times)
            for t, v in zip(np.split(times, cuts), np.split(values, cuts), strict=True):
                on_minutes[sid, int(t[0]) // HOUR_MS * HOUR_MS] = (t, v)
        nothing = (np.empty(0, dtype=np.int64), np.empty(0))
        for sid, *columns in found_rows:
            cuts = _hour_cuts(columns[0])
            for part in zip(*(np.split(c, cuts) for c in columns[:5]), strict=True):
                hour = int(part[0][0]) // HOUR_MS * HOUR_MS
                if (sid, hour) in wanted:
                    kept = (*part, *on_minutes.get((sid, hour), nothing))
                    _keep(("minutes", sid, hour), int(part[1].sum()), len(part[0]) * 3, kept)
                    pieces.setdefault(sid, []).append((hour, kept))
    for (order, _, _), rows in zip(edges, edge_rows, strict=True):
        for sid, *columns in rows:
            pieces.setdefault(sid, []).append((order, tuple(columns[:5])))
    rows = []
    empty = np.empty(0)
    edge_points: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}
    for sid, parts in pieces.items():
        parts.sort(key=lambda part: part[0])
        columns = [[p[1][k] for p in parts] for k in range(5)]
        if any(len(piece) for piece in columns[0]):
            rows.append((sid, *columns, empty, np.empty(0, dtype=np.int64)))
        at = [p[1][5] for p in parts if len(p[1]) == 7 and len(p[1][5])]
        if at and len(wanted_times):
            kept_at = np.concatenate(at)
            # Which of the kept points on minutes are window edges (wanted_times is sorted).
            index = np.minimum(np.searchsorted(wanted_times, kept_at), len(wanted_times) - 1)
            on = wanted_times[index] == kept_at
            if on.any():
                kept_values = np.concatenate(
                    [p[1][6] for p in parts if len(p[1]) == 7 and len(p[1][5])]
                )
                edge_points.setdefault(sid, []).append((kept_at[on], kept_values[on]))
    for sid, times, values in probed:
        edge_points.setdefault(sid, []).append((times, values))
    merged = {}
    for sid, found in edge_points.items():
        times = np.concatenate([f[0] for f in found])
        order = np.argsort(times, kind="stable")
        merged[sid] = (times[order], np.concatenate([f[1] for f in found])[order])
    return rows, merged
