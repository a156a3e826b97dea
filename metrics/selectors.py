"""Reads of metrics: bucketed series from the rollups, percentiles from the raw points.

Buckets are laid out in Python by `metrics.buckets` (any zone, exact to the second); the SQL
here only places rows between their boundaries.

Values come from the coarsest rollup whose UTC buckets tile every query bucket: day rollups for
UTC days, hour rollups for zones whose offsets are whole hours, 15-minute rollups for the hours
and days of every other zone of today's time-zone database (Asia/Kolkata, Asia/Kathmandu,
Pacific/Chatham …), minute rollups for minute buckets. Sums, counts, minima and maxima of
rollups combine exactly, so an average is Σsum / Σcount over the series and rollup rows of a
bucket, never an average of averages. Percentiles need every value: raw days rank them in SQL
(percentile_cont), compacted days in numpy (metrics.percentiles), bounded by
QUERY_PERCENTILE_TIMEOUT_MS.

A bucket is always whole: `start` and `end` choose which buckets are returned (from the one
holding `start` to the last one starting before `end`), and each bucket aggregates all of its
points, including those before `start` in the first bucket and at or after `end` in the last.
"""

from __future__ import annotations

import bisect
import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import numpy as np
import psycopg.errors
from django.conf import settings
from django.db import DatabaseError, transaction
from django.db.models import Count, Min

from glowing_fiesta import monitoring
from glowing_fiesta.db import replica
from glowing_fiesta.exceptions import Problem

from . import buckets, percentiles, storage
from .models import IngestBatch, Metric, MetricPurge, MetricType, Series

logger = logging.getLogger(__name__)

INTERVALS = ("minute", "hour", "day")
ROLLUP_AGGREGATIONS = ("sum", "avg", "min", "max", "count", "rate")
PERCENTILES = {"p50": 0.5, "p90": 0.9, "p95": 0.95, "p99": 0.99}
AGGREGATIONS = (*ROLLUP_AGGREGATIONS, *PERCENTILES)
FILLS = ("null", "zero", "previous")

# (width, table), coarsest first: the write path's tables, read in the other direction.
_ROLLUP_TABLES = tuple((width, table) for table, width in reversed(storage.ROLLUP_TABLES))

# Sort memory of a percentile query: a day of a busy metric (a few hundred thousand values)
# sorts in memory instead of spilling to disk. One query per worker process at a time.
PERCENTILE_WORK_MEM = "64MB"

# Seconds a client is asked to wait after a query ran out of time.
RETRY_AFTER_SECONDS = 10


class MetricNotFound(Problem):
    status = 404
    slug = "metric-not-found"
    title = "Metric not found"


class QueryTimeout(Problem):
    status = 503
    slug = "query-timeout"
    title = "Query took too long"


Value = float | int | None


@dataclass(frozen=True)
class SeriesQuery:
    """A validated query: which metric, which buckets, how to aggregate and fill them."""

    metric: Metric
    start: datetime
    end: datetime
    interval: str
    aggregation: str
    tz: ZoneInfo
    fill: str
    # All must match (`tags @> {...}`).
    tags: Sequence[tuple[str, str]] = ()
    group_by: str | None = None


@dataclass(frozen=True)
class BucketSeries:
    """Bucket starts (ISO 8601 with the zone's offset) and one value per bucket."""

    starts: list[str]
    values: list[Value]


@dataclass(frozen=True)
class SeriesGroup:
    tags: dict[str, str | None]
    values: list[Value]


@dataclass(frozen=True)
class GroupedSeries:
    """Bucket starts shared by every group, and the groups in tag-value order (null last)."""

    starts: list[str]
    groups: list[SeriesGroup] = field(default_factory=list)


# --- defaults -------------------------------------------------------------------------------


def default_aggregation(metric_type: str) -> str:
    return "sum" if metric_type == MetricType.COUNTER else "avg"


def default_fill(metric_type: str, aggregation: str) -> str:
    """Zero where "nothing happened" means 0 (counts, counter sums and rates), else null."""
    if aggregation == "count":
        return "zero"
    if metric_type == MetricType.COUNTER and aggregation in {"sum", "rate"}:
        return "zero"
    return "null"


def outbox_get_for_key(*, api_key_id: int, batch_id: int) -> IngestBatch | None:
    """The batch if this API key created it; another key's batch is None, as if absent."""
    return (
        IngestBatch.objects.filter(pk=batch_id, api_key_id=api_key_id)
        .defer("packed", "payload")
        .first()
    )


def metric_not_found(name: str) -> MetricNotFound:
    """The one 404 for a metric that does not exist, or that the caller may not see."""
    return MetricNotFound(f"There is no metric named {name!r}.")


def metric_get(*, name: str, allowed: Callable[[str], bool] | None = None) -> Metric:
    """The metric called `name`; MetricNotFound (404) when there is none.

    `allowed` (a key's namespaces, apikeys.namespaces) decides first, without a query: a name
    outside gets the very 404 of a metric that does not exist, whether or not it does.
    """
    if allowed is not None and not allowed(name):
        raise metric_not_found(name)
    metric = Metric.objects.filter(name=name).first()
    if metric is None:
        raise metric_not_found(name)
    return metric


# --- SQL ------------------------------------------------------------------------------------


def _utc(second: int) -> datetime:
    return datetime.fromtimestamp(second, UTC)


# The boundaries travel as one literal of Unix seconds and become a timestamptz[] once per
# query (an InitPlan): adapting thousands of datetimes one by one cost more than the query.
_BOUNDS = "(SELECT array_agg(to_timestamp(x) ORDER BY x) FROM unnest(%s::float8[]) AS x)"


def _bounds_literal(bounds: Sequence[int]) -> str:
    return "{" + ",".join(map(str, bounds)) + "}"


def _alignment(bounds: Sequence[int]) -> int:
    """The largest rollup width (day, hour, 15 min, minute) dividing every boundary, else 1."""
    for size, _ in _ROLLUP_TABLES:
        if all(b % size == 0 for b in bounds):
            return size
    return 1


def _rollup_table(bounds: Sequence[int]) -> str:
    size = _alignment(bounds)
    for table_size, table in _ROLLUP_TABLES:
        if table_size <= size:
            return table
    # Offsets with seconds (local mean time, before ~1900): minute rollups are the closest.
    return "metric_rollup_minute"


def _series_filter(query: SeriesQuery) -> tuple[str, list]:
    """SQL condition on `s` (series) for the query's tag filter, and its parameters."""
    if not query.tags:
        return "", []
    # One containment per pair, so a key asked for with two values matches nothing.
    return "AND s.tags @> ALL(%s::jsonb[])", [
        [json.dumps({key: value}, ensure_ascii=False) for key, value in query.tags]
    ]


@contextmanager
def _timed(*, shape: str, query: SeriesQuery, buckets: int) -> Iterator[None]:
    """Times one aggregation query (observed and, when slow, logged); a statement cancelled by
    its timeout becomes QueryTimeout (503 with Retry-After)."""
    started = time.perf_counter()
    try:
        yield
    except (DatabaseError, psycopg.errors.QueryCanceled) as exc:
        if isinstance(exc, psycopg.errors.QueryCanceled) or isinstance(
            exc.__cause__, psycopg.errors.QueryCanceled
        ):
            _log_query(shape, query, buckets, started, timed_out=True)
            raise QueryTimeout(
                "The query ran out of time; try a shorter range or a coarser interval.",
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            ) from None
        raise
    _log_query(shape, query, buckets, started, timed_out=False)


def _execute(sql: str, params: list, *, shape: str, query: SeriesQuery, buckets: int) -> list:
    with (
        _timed(shape=shape, query=query, buckets=buckets),
        replica.read_connection().cursor() as cursor,
    ):
        cursor.execute(sql, params)
        return cursor.fetchall()


def _log_query(
    shape: str, query: SeriesQuery, buckets: int, started: float, *, timed_out: bool
) -> None:
    duration_ms = (time.perf_counter() - started) * 1000
    monitoring.aggregation_observe(interval=query.interval, shape=shape, seconds=duration_ms / 1000)
    if duration_ms < settings.QUERY_SLOW_MS and not timed_out:
        return
    logger.warning(
        "query timed out" if timed_out else "slow query",
        extra={
            "shape": shape,
            "metric": query.metric.name,
            "interval": query.interval,
            "aggregation": query.aggregation,
            "tz": query.tz.key,
            "buckets": buckets,
            "tags": len(query.tags),
            "group_by": query.group_by,
            "duration_ms": round(duration_ms, 2),
            "threshold_ms": settings.QUERY_SLOW_MS,
        },
    )


# What each aggregation reads of the rollups: sums, counts, minima and maxima combine exactly
# across series and rollup rows. A rate is the sum, divided by the bucket's length afterwards.
_ROLLUP_VALUE = {
    "sum": "sum(r.sum)",
    "avg": "sum(r.sum) / sum(r.count)::float8",
    "min": "min(r.min)",
    "max": "max(r.max)",
    "count": "sum(r.count)::bigint",
    "rate": "sum(r.sum)",
}


def _rollup_rows(query: SeriesQuery, bounds: list[int]) -> dict[str | None, list[Value]]:
    """{group value: one value or None per bucket}; a single group (None) when ungrouped."""
    table = _rollup_table(bounds)
    where, where_params = _series_filter(query)
    group = "s.tags ->> %s" if query.group_by else "NULL::text"
    # The series of one metric are few (METRIC_MAX_SERIES); each joins its rollup rows through
    # the (series_id, bucket) primary key, and partitions outside the range are pruned. Only
    # the final value per bucket comes back: fewer columns to convert in Python.
    value = _ROLLUP_VALUE[query.aggregation]
    source = table
    source_params: list = []
    bucket_filter = "AND r.bucket >= %s AND r.bucket < %s"
    if table == "metric_rollup_minute":
        # Raw days' minute rollups and compacted days' (gf_rollup_minute, migration 0014). The
        # sums of several series are added in series order: the two sources return rows in other
        # orders, and float addition is not associative.
        # The ids as a parameter, not a subquery: the planner inlines the function only then,
        # and prunes both sources' day partitions.
        series_ids = list(
            Series.objects.filter(metric_id=query.metric.pk).values_list("id", flat=True)
        )
        source = "gf_rollup_minute(%s::bigint[], %s, %s)"
        source_params = [series_ids, _utc(bounds[0]), _utc(bounds[-1])]
        value = value.replace("sum(r.sum)", "sum(r.sum ORDER BY r.series_id, r.bucket)")
        # The function keeps to the range itself: the same test outside would be evaluated
        # again on each compacted minute's computed bucket.
        bucket_filter = ""
    sql = f"""
        SELECT {group} AS grp, width_bucket(r.bucket, {_BOUNDS}) AS i, {value}
        FROM series s
        JOIN {source} r ON r.series_id = s.id
        WHERE s.metric_id = %s {where} {bucket_filter}
        GROUP BY 1, 2
    """  # noqa: S608 - table and fragments are constants of this module
    params: list = [query.group_by] if query.group_by else []
    params += [_bounds_literal(bounds), *source_params, query.metric.pk, *where_params]
    if bucket_filter:
        params += [_utc(bounds[0]), _utc(bounds[-1])]
    rows = _execute(sql, params, shape=f"rollup:{table}", query=query, buckets=len(bounds) - 1)
    out = _place(rows, len(bounds) - 1)
    if query.aggregation == "rate":
        # Per second of each bucket, whose length varies across DST changes.
        for values in out.values():
            for index, value in enumerate(values):
                if value is not None:
                    values[index] = value / (bounds[index + 1] - bounds[index])
    return out


def _place(rows: Sequence[tuple], buckets: int) -> dict[str | None, list[Value]]:
    out: dict[str | None, list[Value]] = {}
    for grp, index, value in rows:
        values = out.get(grp)
        if values is None:
            values = out[grp] = [None] * buckets
        values[index - 1] = value
    return out


# Compacted rows decoded per fetch: about 360,000 points at a 10-second scrape. Buckets that
# end before the next row's hour are ranked and let go, so memory holds a fetch and the buckets
# still open, not the range.
_COMPACT_FETCH_ROWS = 1000


def _percentile_rows(query: SeriesQuery, bounds: list[int]) -> dict[str | None, list[Value]]:
    """{group value: percentile or None per bucket}, exact, under QUERY_PERCENTILE_TIMEOUT_MS.

    Raw days in SQL (percentile_cont); compacted days decoded and ranked in numpy
    (metrics.percentiles, the same answer to the bit, several times faster than decoding them in
    SQL). A bucket that holds compacted points takes its raw points, if any, as an array.
    The compacted days are read before and after: a compaction that committed in between (a day
    moved from raw to compacted) makes the query run again, so no day is counted twice or not
    at all.
    """
    with _timed(shape="percentile", query=query, buckets=len(bounds) - 1):
        connection = replica.read_connection()
        with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
            # Transaction-local (SET LOCAL), so they end with this transaction; when the caller
            # already holds a transaction the previous values are put back explicitly.
            cursor.execute(
                "SELECT current_setting('statement_timeout'), current_setting('work_mem'),"
                " set_config('statement_timeout', %s, true), set_config('work_mem', %s, true)",
                [f"{settings.QUERY_PERCENTILE_TIMEOUT_MS}ms", PERCENTILE_WORK_MEM],
            )
            timeout, work_mem = cursor.fetchone()[:2]
            deadline = time.monotonic() + settings.QUERY_PERCENTILE_TIMEOUT_MS / 1000
            days = _compacted_days(cursor, bounds)
            while True:
                out = _percentiles_read(connection, cursor, query, bounds, days, deadline)
                again = _compacted_days(cursor, bounds)
                if again == days:
                    break
                days = again
            cursor.execute(
                "SELECT set_config('statement_timeout', %s, true),"
                " set_config('work_mem', %s, true)",
                [timeout, work_mem],
            )
    return out


def _compacted_days(cursor, bounds: list[int]) -> list:
    """The compacted UTC days that meet the buckets, oldest first."""
    cursor.execute(
        "SELECT day FROM metric_compacted_days WHERE day >= %s::date AND day < %s ORDER BY day",
        [_utc(bounds[0]), _utc(bounds[-1])],
    )
    return [row[0] for row in cursor.fetchall()]


def _points_group(query: SeriesQuery, alias: str) -> tuple[str, str, str, list]:
    """For a read of points (`alias`, raw or compacted rows): the group column, the join to
    their series when the group or the tag filter needs it, and the filter with its parameters."""
    where, where_params = _series_filter(query)
    group = "s.tags ->> %s" if query.group_by else "NULL::text"
    join = f"JOIN series s ON s.id = {alias}.series_id" if where or query.group_by else ""
    return group, join, where, where_params


def _percentiles_read(connection, cursor, query, bounds, days, deadline) -> dict:
    fraction = PERCENTILES[query.aggregation]
    lo, hi = _utc(bounds[0]), _utc(bounds[-1])
    # Buckets meeting a compacted day: their raw points come back as arrays, to be ranked with
    # the compacted ones.
    day_starts = [int(datetime(d.year, d.month, d.day, tzinfo=UTC).timestamp()) for d in days]
    mixed = sorted(
        {
            i
            for start in day_starts
            for i in range(
                max(bisect.bisect_right(bounds, start), 1),
                min(bisect.bisect_left(bounds, start + 86400), len(bounds) - 1) + 1,
            )
        }
    )
    alignment = _alignment(bounds)
    # Hour-aligned buckets group on the stored UTC hour, so PostgreSQL does not compute a
    # truncation per row; minute-aligned ones on the minute of recorded_at.
    if alignment >= 3600:
        key = "p.bucket_hour"
    elif alignment >= 60:
        key = "date_trunc('minute', p.recorded_at)"
    else:
        key = "p.recorded_at"
    group, join, where, where_params = _points_group(query, "p")
    # recorded_at bounds the scan to the range's daily partitions (the partition key).
    sql = f"""
        SELECT x.grp, x.i,
               percentile_cont(%s) WITHIN GROUP (ORDER BY x.value)
                   FILTER (WHERE x.i <> ALL(%s::int[])),
               array_agg(x.value) FILTER (WHERE x.i = ANY(%s::int[]))
        FROM (
            SELECT {group} AS grp, width_bucket({key}, {_BOUNDS}) AS i, p.value
            FROM metric_points p {join}
            WHERE p.metric_id = %s AND p.recorded_at >= %s AND p.recorded_at < %s {where}
        ) x
        GROUP BY 1, 2
    """  # noqa: S608 - fragments are constants of this module
    params: list = [fraction, mixed, mixed]
    params += [query.group_by] if query.group_by else []
    params += [_bounds_literal(bounds), query.metric.pk, lo, hi, *where_params]
    cursor.execute(sql, params)
    out: dict[str | None, list[Value]] = {}
    codes: dict[str | None, int] = {}
    pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for grp, index, value, raw in cursor.fetchall():
        if raw is None:
            out.setdefault(grp, [None] * (len(bounds) - 1))[index - 1] = value
        else:
            code = codes.setdefault(grp, len(codes))
            pending.append(
                (np.full(len(raw), code), np.full(len(raw), index), np.array(raw, np.float64))
            )
    if days:
        _compact_percentiles(connection, query, bounds, days, codes, pending, out, deadline)
    return out


def _compact_percentiles(connection, query, bounds, days, codes, pending, out, deadline) -> None:
    """Ranks the compacted days' points (with the raw ones of their buckets, in `pending`) into
    `out`, fetched in hour order and ranked bucket by bucket as each one closes."""
    fraction = PERCENTILES[query.aggregation]
    group, join, where, where_params = _points_group(query, "c")
    sql = f"""
        SELECT {group}, (extract(epoch FROM c.hour) * 1000000)::bigint, c.points, c.last_us,
               c.tstep, c.scale, c.t, c.v
        FROM metric_points_compact c {join}
        WHERE c.metric_id = %s AND c.hour >= %s AND c.hour < %s
          AND (c.hour AT TIME ZONE 'UTC')::date = ANY(%s::date[]) {where}
        ORDER BY c.hour
    """  # noqa: S608 - fragments are constants of this module
    params: list = [query.group_by] if query.group_by else []
    first_hour = _utc(bounds[0] - bounds[0] % 3600)
    params += [query.metric.pk, first_hour, _utc(bounds[-1]), days, *where_params]
    seconds = np.array(bounds, dtype=np.int64)
    edges = seconds * 1_000_000
    with connection.chunked_cursor() as rows:
        rows.execute(sql, params)
        while True:
            if time.monotonic() > deadline:
                raise psycopg.errors.QueryCanceled("percentile deadline")
            batch = rows.fetchmany(_COMPACT_FETCH_ROWS)
            if batch:
                code, at, value = percentiles.compact_decode(
                    [(codes.setdefault(r[0], len(codes)), *r[1:]) for r in batch]
                )
                keep = (at >= edges[0]) & (at < edges[-1])
                at = at[keep]
                pending.append((code[keep], np.searchsorted(edges, at, side="right"), value[keep]))
                # Rows come in hour order: every bucket ending by this batch's last hour is whole.
                closed = int(np.searchsorted(seconds, batch[-1][1] // 1_000_000, "right")) - 1
            else:
                closed = len(bounds) - 1
            if pending:
                code = np.concatenate([p[0] for p in pending])
                index = np.concatenate([p[1] for p in pending])
                value = np.concatenate([p[2] for p in pending])
                done = index <= closed
                names = {c: g for g, c in codes.items()}
                for c, i, v in percentiles.percentile_cont(
                    code[done], index[done], value[done], fraction
                ):
                    out.setdefault(names[c], [None] * (len(bounds) - 1))[i - 1] = v
                rest = ~done
                pending[:] = [(code[rest], index[rest], value[rest])] if rest.any() else []
            if not batch:
                return


# --- values and fill ------------------------------------------------------------------------


def _fill(values: list[Value], fill: str, aggregation: str) -> list[Value]:
    if fill == "zero":
        zero = 0 if aggregation == "count" else 0.0
        return [zero if v is None else v for v in values]
    if fill == "previous":
        # Before the first value there is nothing to carry: those buckets stay null.
        out: list[Value] = []
        last: Value = None
        for v in values:
            if v is not None:
                last = v
            out.append(last)
        return out
    return values


def _group_order(value: str | None) -> tuple[bool, str]:
    return (value is None, value or "")


# --- the query ------------------------------------------------------------------------------


@replica.replica_reads
def series_query(*, query: SeriesQuery) -> BucketSeries | GroupedSeries:
    """The query's buckets, one value each: sum/avg/min/max/count/rate from the rollups, exact
    percentiles (percentile_cont) from the raw points under QUERY_PERCENTILE_TIMEOUT_MS
    (QueryTimeout, 503, past it). With `group_by`, one series per value of that tag: series
    without it form the group {key: null}; groups without points in the buckets are left out.
    """
    bounds = buckets.bucket_bounds(
        start=query.start, end=query.end, interval=query.interval, tz=query.tz
    )
    read = _percentile_rows if query.aggregation in PERCENTILES else _rollup_rows
    rows = read(query, bounds)
    starts = buckets.bucket_starts(bounds, query.tz)
    if not query.group_by:
        values = rows.get(None) or [None] * (len(bounds) - 1)
        return BucketSeries(starts=starts, values=_fill(values, query.fill, query.aggregation))
    groups = [
        SeriesGroup(
            tags={query.group_by: grp},
            values=_fill(rows[grp], query.fill, query.aggregation),
        )
        for grp in sorted(rows, key=_group_order)
    ]
    return GroupedSeries(starts=starts, groups=groups)


# --- the outbox and the purges, as GET /metrics reads them at every scrape ------------------


def outbox_backlog() -> dict[str, int]:
    """Batches of the outbox not yet done, by state ({"pending": 3, "failed": 1}; a state
    without batches is absent). Reads only ingest_batches_unfinished_idx, which holds exactly
    these rows: the done ones, nearly all of the table, are never visited."""
    rows = (
        IngestBatch.objects.exclude(state=IngestBatch.State.DONE)
        .order_by()
        .values_list("state")
        .annotate(batches=Count("*"))
    )
    return dict(rows)


def purges_pending() -> tuple[int, datetime | None]:
    """The purges of deleted metrics not yet done, and when the oldest was asked for (None
    when none is). A handful of rows at most: each lives from a metric's delete to its purge."""
    found = MetricPurge.objects.aggregate(purges=Count("*"), oldest=Min("created_at"))
    return found["purges"], found["oldest"]


def storage_figures() -> tuple[dict[str, int], int, int]:
    """Bytes on disk per kind of table (raw, minute, compact, rollups), and the days compacted
    with their points: a catalog read and a table of one row per day."""
    days = storage.compacted_days()
    return storage.bytes_by_kind(), len(days), sum(row[1] for row in days)
