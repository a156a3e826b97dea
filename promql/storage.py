"""The hand-written SQL of the Prometheus query API: which metrics and series a selector may
match, their raw points, and counters' totals before a range.

Label matching happens in Python (with RE2, as Prometheus matches), never in SQL: PostgreSQL's
regular expressions are not RE2's, and a hostile pattern must not run inside the database. The
candidates are cheap to list: metrics by name (one table of names), series by metric id.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from datetime import time as dt_time
from typing import Any

import numpy as np
import psycopg

from glowing_fiesta.db import replica
from metrics.compaction import compactable_before

# Characters a stored metric name may hold that PromQL names may not (metrics.points.NAME_RE).
_MAPPED = ".-/"


def _like_prefix(prefix: str) -> str:
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def metrics_candidates(*, name: str | None, namespaces: Sequence[str]) -> Read:
    """The read of (id, name, type) of the metrics a selector may match.

    With an equality on `__name__` only the metrics stored under that name or mapping to it
    (`translate` is the SQL form of names.promql_name for the characters names may hold); else
    every metric. Either way only inside `namespaces` (name prefixes; empty means all).
    """
    where: list[str] = []
    params: list[Any] = []
    if name is not None:
        # A sequential scan of the names table: metrics number thousands, not millions.
        where.append("(name = %s OR translate(name, %s, %s) = %s)")
        params += [name, _MAPPED, "_" * len(_MAPPED), name]
    if namespaces:
        where.append("name LIKE ANY(%s)")
        params.append([_like_prefix(prefix) for prefix in namespaces])
    sql = "SELECT id::int8, name, type FROM metrics"
    if where:
        sql += " WHERE " + " AND ".join(where)
    return Read(sql + " ORDER BY name", params, lambda rows: rows)


def series_of(metric_ids: Sequence[int]) -> Read:
    """The read of (id, metric_id, tags) of every series of the metrics (the unique (metric,
    hash) index)."""
    if not metric_ids:
        return _nothing([])
    return Read(
        "SELECT id::int8, metric_id::int8, tags FROM series WHERE metric_id = ANY(%s) ORDER BY id",
        [list(metric_ids)],
        lambda rows: rows,
    )


def named_series(*, name: str, namespaces: Sequence[str]) -> Read:
    """The read of (metric id, name, type, series id, tags) of every series of the metrics
    stored under `name` or mapping to it, inside `namespaces`, by series id: metrics_candidates
    and series_of in one statement, for the selectors that name their metric (nearly all)."""
    where = ["(m.name = %s OR translate(m.name, %s, %s) = %s)"]
    params: list[Any] = [name, _MAPPED, "_" * len(_MAPPED), name]
    if namespaces:
        where.append("m.name LIKE ANY(%s)")
        params.append([_like_prefix(prefix) for prefix in namespaces])
    sql = (
        "SELECT m.id::int8, m.name, m.type, s.id::int8, s.tags"
        " FROM metrics m JOIN series s ON s.metric_id = m.id WHERE "
    )
    return Read(
        sql + " AND ".join(where) + " ORDER BY s.id",
        params,
        lambda rows: rows,
    )


def read_only(*, timeout_ms: int) -> Read:
    """The settings of a query's transaction, as one statement: read-only, and cancelled by the
    server past `timeout_ms` (both SET LOCAL: they end with the transaction)."""
    return Read(
        "SELECT set_config('transaction_read_only', 'on', true),"
        " set_config('statement_timeout', %s, true)",
        [f"{int(timeout_ms)}ms"],
        lambda rows: None,
    )


# A time as whole microseconds since the epoch: date_part is a float8 (numeric extract is twice as
# slow here), exact to the microsecond after rounding, since 2^53 us is year 2255.
def _us(column: str) -> str:
    return f"(date_part('epoch', {column}) * 1000000)::int8"


def ms_from_us(us: np.ndarray) -> np.ndarray:
    """Microseconds to milliseconds, half up: the times PromQL works in."""
    return (np.asarray(us, dtype=np.int64) + 500) // 1000


def ms_time(ms: int) -> datetime:
    """Milliseconds since the epoch (PromQL's times) as the timestamptz the SQL takes."""
    return datetime.fromtimestamp(ms / 1000, UTC)


# Arrays read as `array_send(array_agg(...))`: PostgreSQL's binary array format, decoded by numpy
# in one call instead of one Python object per element (a 6-hour panel reads 36,000 points).
# A one-dimensional array without NULLs is a 20-byte header, then per element its length (int4)
# and its 8 bytes, big-endian; an empty one is the 12-byte header alone. A timestamptz is its
# int8 microseconds since 2000-01-01, so times need no conversion in SQL.
_ELEMENTS = {
    "int8": np.dtype([("length", ">i4"), ("value", ">i8")]),
    "float8": np.dtype([("length", ">i4"), ("value", ">f8")]),
}
_PG_EPOCH_US = 946_684_800_000_000


def _array(data: bytes, kind: str) -> np.ndarray:
    if len(data) <= 12:
        return np.empty(0, dtype=np.int64 if kind == "int8" else float)
    elements = np.frombuffer(data, dtype=_ELEMENTS[kind], offset=20)
    return elements["value"].astype(np.int64 if kind == "int8" else float)


def _ms_array(data: bytes) -> np.ndarray:
    """A timestamptz array (as array_send gives it) as milliseconds since the epoch, half up;
    `-infinity` (int8's least value) stays below UNKNOWN_MS."""
    us = _array(data, "int8")
    return np.where(us == _NEG_INFINITY, UNKNOWN_MS, ms_from_us(us + _PG_EPOCH_US))


_NEG_INFINITY = np.iinfo(np.int64).min
UNKNOWN_MS = np.iinfo(np.int64).min // 2  # a bucket's latest time where it was never kept


@dataclass(frozen=True)
class Read:
    """A read not sent yet: its SQL and parameters (no SQL: nothing to read), and how its rows
    become its answer. `run` sends several together."""

    sql: str | None
    params: Any
    decode: Callable[[list[tuple]], Any]


def _nothing(answer: Any) -> Read:
    return Read(None, None, lambda rows: answer)


# The settings of the query being evaluated (read_only), sent ahead of each of its round trips.
_settings: ContextVar[Read | None] = ContextVar("promql_settings", default=None)


@contextmanager
def query_settings(*, timeout_ms: int) -> Iterator[None]:
    """Within it, every `run` sends the query's settings (read_only: read-only, cancelled past
    `timeout_ms`) ahead of its reads, in the same round trip. Outside a transaction the
    statements of one pipeline are one implicit transaction, which SET LOCAL lasts exactly as
    long as: no BEGIN and no COMMIT to wait for. Inside one (a caller's savepoint), the settings
    hold to its end."""
    token = _settings.set(read_only(timeout_ms=timeout_ms))
    try:
        yield
    finally:
        _settings.reset(token)


def run(*reads: Read) -> list[Any]:
    """The answers of `reads`, in their order, from one round trip to PostgreSQL: in psycopg's
    pipeline mode the statements leave together and the server answers them in order, where
    each alone would wait for the one before (a panel's reads are a few small ones, each about
    as long as its round trip). On the request's connection, answering in binary: arrays of
    int8 and float8 arrive as machine numbers, not text to parse. Under query_settings, the
    query's settings lead."""
    sent = [read for read in reads if read.sql is not None]
    settings = _settings.get()
    if sent and settings is not None:
        sent.insert(0, settings)
    rows: dict[int, list[tuple]] = {}
    if sent:
        connection = replica.read_connection()
        connection.ensure_connection()
        raw = connection.connection
        cursors = [psycopg.Cursor(raw) for _ in sent]
        try:
            if len(sent) == 1:
                cursors[0].execute(sent[0].sql, sent[0].params, binary=True)
            else:
                with raw.pipeline():
                    for cursor, read in zip(cursors, sent, strict=True):
                        cursor.execute(read.sql, read.params, binary=True)
            for cursor, read in zip(cursors, sent, strict=True):
                rows[id(read)] = cursor.fetchall()
        finally:
            for cursor in cursors:
                cursor.close()
    return [read.decode(rows.get(id(read), [])) for read in reads]


def one(read: Read) -> Any:
    """The answer of one read."""
    return run(read)[0]


def _raw_from() -> datetime:
    """The first time no compaction can have reached: the day after the first one still raw at
    this moment (metrics.compaction.compactable_before), a day's margin for other hosts' clocks."""
    day = compactable_before(datetime.now(UTC)) + timedelta(days=1)
    return datetime.combine(day, dt_time.min, UTC)


def _points(since: datetime, metrics: str, lo: str, hi: str) -> str:
    """The SQL source of the raw points of `metrics` in `[lo, hi]` (SQL expressions), reading
    nothing before `since`: the points table alone where no day can have been compacted (half
    the planning and execution of gf_points, which also unions the compacted rows), else
    gf_points. Both take the same parameters in the same order."""
    if since >= _raw_from():
        where = f"metric_id = ANY({metrics}) AND recorded_at BETWEEN {lo} AND {hi}"
        columns = "metric_id, series_id, id, value, recorded_at, bucket_hour"
        return f"(SELECT {columns} FROM metric_points WHERE {where}) p"  # noqa: S608
    return f"gf_points({metrics}, {lo}, {hi})"


def _minutes(since: datetime, series: str, lo: str, hi: str) -> str:
    """The SQL source of the minute rollups of `series` with buckets in `[lo, hi)`, as _points:
    the minute rollups table alone where no day can have been compacted, else gf_rollup_minute."""
    if since >= _raw_from():
        where = f"series_id = ANY({series}) AND bucket >= {lo} AND bucket < {hi}"
        columns = "series_id, bucket, count, sum, min, max"
        return f"(SELECT {columns} FROM metric_rollup_minute WHERE {where}) r"  # noqa: S608
    return f"gf_rollup_minute({series}, {lo}, {hi})"


def points_between(
    *, metric_ids: Sequence[int], series_ids: Sequence[int], after: datetime, until: datetime
) -> Read:
    """The read of each series' points in `(after, until]`: (series_id, times in ms, values), by
    time (then the order they were written in).

    Read by `(metric_id, recorded_at)`, the index the points table has, with the day partitions
    outside the range pruned; one row of arrays per series, in binary. The arrays are not
    ordered in SQL (an ordered aggregate sorts each group again): numpy sorts them.
    """
    if not series_ids:
        return _nothing([])
    return Read(
        f"""
        SELECT series_id::int8, array_send(array_agg(id::int8)),
               array_send(array_agg(recorded_at)), array_send(array_agg(value::float8))
        FROM {_points(after, "%s::bigint[]", "%s", "%s")}
        WHERE series_id = ANY(%s) AND recorded_at > %s AND recorded_at <= %s
        GROUP BY series_id
        """,  # noqa: S608 - fixed fragments
        [list(metric_ids), after, until, list(series_ids), after, until],
        lambda rows: [
            (sid, *_points_in_order(ids, times, values)) for sid, ids, times, values in rows
        ],
    )


def _points_in_order(ids: bytes, times: bytes, values: bytes) -> tuple[np.ndarray, np.ndarray]:
    """A group's points as array_send gave them, unordered: (times in ms, values) by time, then
    the order they were written in (their ids)."""
    us = _array(times, "int8")
    order = np.lexsort((_array(ids, "int8"), us))
    return ms_from_us(us[order] + _PG_EPOCH_US), _array(values, "float8")[order]


def hour_counts(*, series_ids: Sequence[int], first: datetime, end: datetime) -> Read:
    """The read of {(series_id, hour start in ms): points} of the UTC hours in `[first, end)` that
    hold points, from the hour rollups: written in the transaction that writes the points, so the
    count is the hour's points as this transaction sees them."""
    if not series_ids:
        return _nothing({})

    def decode(rows: list[tuple]) -> dict[tuple[int, int], int]:
        out = {}
        for sid, hours, counts in rows:
            for hour, count in zip(
                _ms_array(hours).tolist(), _array(counts, "int8").tolist(), strict=True
            ):
                out[sid, hour] = count
        return out

    return Read(
        """
        SELECT series_id::int8, array_send(array_agg(bucket)), array_send(array_agg(count::int8))
        FROM metric_rollup_hour
        WHERE series_id = ANY(%s) AND bucket >= %s AND bucket < %s
        GROUP BY series_id
        """,
        [list(series_ids), first, end],
        decode,
    )


def points_by_hour(
    *, metric_ids: Sequence[int], series_ids: Sequence[int], first: datetime, end: datetime
) -> Read:
    """The read of each series' points in the UTC hours of `[first, end)`, a row per series and
    hour: (series_id, hour start in ms, times in ms, values), by time (then the order they were
    written in), as points_between gives them."""
    if not series_ids:
        return _nothing([])
    return Read(
        f"""
        SELECT series_id::int8, array_send(array_agg(id::int8)),
               array_send(array_agg(recorded_at)), array_send(array_agg(value::float8)),
               (date_part('epoch', bucket_hour) * 1000)::int8
        FROM {_points(first, "%s::bigint[]", "%s", "%s")}
        WHERE series_id = ANY(%s) AND recorded_at >= %s AND recorded_at < %s
        GROUP BY series_id, bucket_hour
        """,  # noqa: S608 - fixed fragments
        [list(metric_ids), first, end, list(series_ids), first, end],
        lambda rows: [
            (sid, hour, *_points_in_order(ids, times, values))
            for sid, ids, times, values, hour in rows
        ],
    )


def counter_totals_until(
    *, metric_ids: Sequence[int], series_ids: Sequence[int], until: datetime, inclusive: bool = True
) -> Read:
    """The read of each counter series' sum of increments at or before `until` (before it, if not
    `inclusive`), from the coarsest rollups that tile the time before it: whole days, then whole
    hours of its day, whole minutes of its hour, and the raw points of its minute. Rollups are
    kept longer than raw points, so this counts from the oldest data still held.

    The edges are computed here, not in SQL, so that the planner prunes the day partitions of
    the minute rollups and the points to the one day that holds them.
    """
    if not series_ids:
        return _nothing({})
    until = until.astimezone(UTC)
    day = until.replace(hour=0, minute=0, second=0, microsecond=0)
    hour = until.replace(minute=0, second=0, microsecond=0)
    minute = until.replace(second=0, microsecond=0)
    upto = "<=" if inclusive else "<"
    return Read(
        f"""
        SELECT series_id, sum(total) FROM (
            SELECT series_id, sum(sum) AS total FROM metric_rollup_day
            WHERE series_id = ANY(%(ids)s) AND bucket < %(day)s GROUP BY series_id
            UNION ALL
            SELECT series_id, sum(sum) FROM metric_rollup_hour
            WHERE series_id = ANY(%(ids)s) AND bucket >= %(day)s AND bucket < %(hour)s
            GROUP BY series_id
            UNION ALL
            SELECT series_id, sum(sum ORDER BY bucket)
            FROM {_minutes(hour, "%(ids)s::bigint[]", "%(hour)s", "%(minute)s")}
            WHERE bucket >= %(hour)s AND bucket < %(minute)s
            GROUP BY series_id
            UNION ALL
            SELECT series_id, sum(value ORDER BY recorded_at, id)
            FROM {_points(minute, "%(metrics)s::bigint[]", "%(minute)s", "%(until)s")}
            WHERE series_id = ANY(%(ids)s)
              AND recorded_at >= %(minute)s AND recorded_at {upto} %(until)s
            GROUP BY series_id
        ) parts
        GROUP BY series_id
        """,  # noqa: S608 - {upto} is one of two operators of this function
        {
            "until": until,
            "day": day,
            "hour": hour,
            "minute": minute,
            "ids": list(series_ids),
            "metrics": list(metric_ids),
        },
        lambda rows: {series_id: float(total) for series_id, total in rows},
    )


def series_with_data(*, series_ids: Sequence[int], after: datetime, until: datetime) -> set[int]:
    """The series with a point in the hours overlapping `[after, until]` (hour rollups: one
    index probe per series), for the series and label lists of a time range."""
    if not series_ids:
        return set()
    with replica.read_connection().cursor() as cursor:
        cursor.execute(
            """
            SELECT DISTINCT series_id FROM metric_rollup_hour
            WHERE series_id = ANY(%s)
              AND bucket >= date_trunc('hour', %s::timestamptz AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
              AND bucket <= %s
            """,
            [list(series_ids), after, until],
        )
        return {row[0] for row in cursor.fetchall()}


def tag_keys(*, namespaces: Sequence[str]) -> list[str]:
    """Every tag key of a series of a metric inside `namespaces` (the series table, scanned)."""
    sql = "SELECT DISTINCT jsonb_object_keys(s.tags) FROM series s"
    params: list[Any] = []
    if namespaces:
        sql += " JOIN metrics m ON m.id = s.metric_id WHERE m.name LIKE ANY(%s)"
        params.append([_like_prefix(prefix) for prefix in namespaces])
    with replica.read_connection().cursor() as cursor:
        cursor.execute(sql, params)
        return [row[0] for row in cursor.fetchall()]


def tag_values(*, label: str, namespaces: Sequence[str]) -> list[str]:
    """The values of the tag keys that map to `label` (`.` and `-` in keys become `_`)."""
    sql = "SELECT DISTINCT t.value FROM series s CROSS JOIN LATERAL jsonb_each_text(s.tags) AS t(key, value)"
    where = ["translate(t.key, '.-', '__') = %s"]
    params: list[Any] = [label]
    if namespaces:
        sql += " JOIN metrics m ON m.id = s.metric_id"
        where.append("m.name LIKE ANY(%s)")
        params.append([_like_prefix(prefix) for prefix in namespaces])
    with replica.read_connection().cursor() as cursor:
        cursor.execute(sql + " WHERE " + " AND ".join(where), params)
        return [row[0] for row in cursor.fetchall()]


ROLLUP_TABLES = {
    3_600_000: "metric_rollup_hour",
    900_000: "metric_rollup_15m",
    60_000: "metric_rollup_minute",
}
# The tables that keep each bucket's latest point (metrics migration 0013): not the minute one.
LATEST_TABLES = (3_600_000, 900_000)


def rollups_between(
    *,
    bucket_ms: int,
    series_ids: Sequence[int],
    after: datetime,
    before: datetime,
    latest: bool = False,
) -> Read:
    """The read of each series' rollups with buckets in `[after, before)`: (series_id, bucket starts
    in ms, counts, sums, mins, maxes, latest values, latest times in ms), numpy arrays in bucket
    order, read by the rollups' (series_id, bucket) keys. The latest points (their time UNKNOWN_MS
    where not kept) only with `latest`, from the tables that keep them (LATEST_TABLES); else empty.

    The arrays are aggregated unordered (every aggregate of a group sees its rows in one order,
    and an ordered aggregate would sort each group once per column) and sorted here."""
    if not series_ids:
        return _nothing([])
    table = ROLLUP_TABLES[bucket_ms]
    source, source_params = table, []
    if bucket_ms == 60_000:
        # Compacted days keep their minute rollups in metric_points_compact (metrics 0014).
        source = _minutes(after, "%s::bigint[]", "%s", "%s")
        source_params = [list(series_ids), after, before]
    latest_columns = (
        "array_send(array_agg(coalesce(last, 'NaN')::float8)),"
        " array_send(array_agg(coalesce(last_at, '-infinity')))"
        if latest
        else "NULL::bytea, NULL::bytea"
    )

    def decode(rows: list[tuple]) -> list[tuple]:
        out = []
        for sid, buckets, counts, sums, mins, maxes, lasts, last_ats in rows:
            starts = _ms_array(buckets)
            order = np.argsort(starts, kind="stable")
            out.append(
                (
                    sid,
                    starts[order],
                    _array(counts, "int8")[order],
                    _array(sums, "float8")[order],
                    _array(mins, "float8")[order],
                    _array(maxes, "float8")[order],
                    _array(lasts, "float8")[order] if latest else np.empty(0),
                    _ms_array(last_ats)[order] if latest else np.empty(0, dtype=np.int64),
                )
            )
        return out

    return Read(
        f"""
        SELECT series_id::int8, array_send(array_agg(bucket)),
               array_send(array_agg(count::int8)), array_send(array_agg(sum::float8)),
               array_send(array_agg(min::float8)), array_send(array_agg(max::float8)),
               {latest_columns}
        FROM {source}
        WHERE series_id = ANY(%s) AND bucket >= %s AND bucket < %s
        GROUP BY series_id
        """,  # noqa: S608 - the table name is one of ROLLUP_TABLES' constants
        [*source_params, list(series_ids), after, before],
        decode,
    )


def points_at(
    *, metric_ids: Sequence[int], series_ids: Sequence[int], times_ms: Sequence[int]
) -> Read:
    """The read of each series' points recorded exactly at one of `times_ms` (window edges that fall
    on bucket boundaries), in time and then write order: one index probe of (metric_id, recorded_at)
    per time. The times travel as one int8 array (hundreds of datetimes cost milliseconds to send)
    and become timestamps once, in an init plan."""
    if not series_ids or not len(times_ms):
        return _nothing([])
    at_ms = "timestamptz 'epoch' + %s::int8 * interval '1 millisecond'"
    since = ms_time(min(times_ms))
    return Read(
        f"""
        SELECT series_id::int8,
               array_send(array_agg(recorded_at ORDER BY recorded_at, id)),
               array_send(array_agg(value::float8 ORDER BY recorded_at, id))
        FROM {_points(since, "%s::bigint[]", at_ms, at_ms)}
        WHERE series_id = ANY(%s)
          AND recorded_at = ANY(ARRAY(
              SELECT timestamptz 'epoch' + ms * interval '1 millisecond'
              FROM unnest(%s::int8[]) AS ms))
        GROUP BY series_id
        """,  # noqa: S608 - fixed fragments
        [
            list(metric_ids),
            min(times_ms),
            max(times_ms),
            list(series_ids),
            [int(t) for t in times_ms],
        ],
        lambda rows: [(sid, _ms_array(at), _array(values, "float8")) for sid, at, values in rows],
    )
