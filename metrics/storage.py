"""The metrics SQL that Django's ORM cannot say well: COPY, rollup upserts, deletes.

Daily partitions are kept by `metrics.partitions`.

Every write of points goes through `points_write`, from the HTTP endpoints and from the queue
worker alike, so rollups always equal the raw points. Callers hold a transaction
(`transaction.atomic`), so points, series and rollups commit together or not at all.
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg
from django.conf import settings
from django.db import DatabaseError, OperationalError, connection, transaction

from glowing_fiesta import locks, monitoring

from . import caches, partitions
from .caches import MetricRef

# Batches above this many points go through COPY (measured ~1.5x faster than INSERT … unnest
# for large batches); smaller ones ride in the same statement as the rollup upserts, so a
# single point costs one statement.
COPY_THRESHOLD = 64


# --- metrics and series --------------------------------------------------------------------


def canonical_tags(tags: Mapping[str, str]) -> str:
    return json.dumps(dict(sorted(tags.items())), separators=(",", ":"), ensure_ascii=False)


def tags_hash(tags: Mapping[str, str]) -> uuid.UUID:
    return _tags_hash(tuple(sorted(tags.items())))


@functools.lru_cache(maxsize=65536)
def _tags_hash(items: tuple[tuple[str, str], ...]) -> uuid.UUID:
    # Batches repeat a few tag sets many times: hash each once.
    return uuid.UUID(
        bytes=hashlib.md5(canonical_tags(dict(items)).encode(), usedforsecurity=False).digest()
    )


def metrics_upsert(wanted: Mapping[str, str]) -> dict[str, MetricRef]:
    """Return the metric for each name, creating missing ones with the wanted type.

    INSERT … ON CONFLICT DO NOTHING makes concurrent first writes safe: the loser waits for the
    winner's commit, inserts nothing and then reads the winner's row (and its type).
    Names are sorted so concurrent batches lock them in the same order.
    """
    found = {name: caches.metrics[name] for name in wanted if name in caches.metrics}
    missing = sorted(name for name in wanted if name not in found)
    if not missing:
        return found
    fresh: dict[str, MetricRef] = {}
    with connection.cursor() as cursor:
        # FOR KEY SHARE holds each metric until this write commits, so `metric_and_series_delete`
        # (FOR UPDATE) waits for the write and deletes its points too. A metric deleted while we
        # waited is not returned: it is inserted again on the next pass, a new metric.
        while missing:
            cursor.execute(
                """
                INSERT INTO metrics (name, type, created_at)
                SELECT name, type, now() FROM unnest(%s::text[], %s::text[]) AS t(name, type)
                ON CONFLICT (name) DO NOTHING
                """,
                [missing, [wanted[name] for name in missing]],
            )
            cursor.execute(
                "SELECT id, name, type FROM metrics WHERE name = ANY(%s) ORDER BY name "
                "FOR KEY SHARE",
                [missing],
            )
            fresh |= {row[1]: MetricRef(*row) for row in cursor.fetchall()}
            missing = [name for name in missing if name not in fresh]
    caches.remember_after_commit(caches.metrics, fresh)
    return found | fresh


class SeriesLimitReached(Exception):
    """Creating the series would take a metric past METRIC_MAX_SERIES (services: 422)."""

    def __init__(self, metric: MetricRef, limit: int) -> None:
        super().__init__(metric.name)
        self.metric = metric
        self.limit = limit


def series_upsert(
    wanted: Mapping[tuple[int, uuid.UUID], Mapping[str, str]], metric_refs: Mapping[int, MetricRef]
) -> dict[tuple[int, uuid.UUID], int]:
    """Return the series id for each (metric id, tags hash), creating missing series.

    A metric may hold at most METRIC_MAX_SERIES series. Creating series takes a per-metric
    advisory lock so the count check and the insert are exact under concurrent writers.
    """
    found = {key: caches.series[key] for key in wanted if key in caches.series}
    missing = [key for key in wanted if key not in found]
    if not missing:
        return found
    fresh = _series_select(missing)
    missing = [key for key in missing if key not in fresh]
    if missing:
        limit = settings.METRIC_MAX_SERIES
        metric_ids = sorted({metric_id for metric_id, _ in missing})
        with connection.cursor() as cursor:
            for metric_id in metric_ids:
                cursor.execute(
                    "SELECT pg_advisory_xact_lock(%s, %s)", [locks.SERIES_NAMESPACE, metric_id]
                )
            fresh |= _series_select(missing)  # created while we waited for the lock
            missing = sorted(key for key in missing if key not in fresh)
            cursor.execute(
                "SELECT metric_id, count(*) FROM series WHERE metric_id = ANY(%s) GROUP BY 1",
                [metric_ids],
            )
            counts = dict(cursor.fetchall())
            for metric_id in metric_ids:
                new = sum(1 for key in missing if key[0] == metric_id)
                if counts.get(metric_id, 0) + new > limit:
                    raise SeriesLimitReached(metric_refs[metric_id], limit)
            if missing:
                cursor.execute(
                    """
                    INSERT INTO series (metric_id, tags, tags_hash, created_at)
                    SELECT m, t::jsonb, h, now()
                    FROM unnest(%s::bigint[], %s::text[], %s::uuid[]) AS x(m, t, h)
                    ON CONFLICT (metric_id, tags_hash) DO NOTHING
                    """,
                    [
                        [key[0] for key in missing],
                        [canonical_tags(wanted[key]) for key in missing],
                        [key[1] for key in missing],
                    ],
                )
                fresh |= _series_select(missing)
    caches.remember_after_commit(caches.series, fresh)
    return found | fresh


def _series_select(keys: Sequence[tuple[int, uuid.UUID]]) -> dict[tuple[int, uuid.UUID], int]:
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT s.metric_id, s.tags_hash, s.id
            FROM series s
            JOIN unnest(%s::bigint[], %s::uuid[]) AS k(m, h) ON s.metric_id = k.m AND s.tags_hash = k.h
            """,
            [[key[0] for key in keys], [key[1] for key in keys]],
        )
        return {(m, h): sid for m, h, sid in cursor.fetchall()}


# --- points and rollups --------------------------------------------------------------------


@dataclass(frozen=True)
class PointRow:
    metric_id: int
    series_id: int
    value: float
    recorded_at: datetime


# Rollup tables and their bucket widths in seconds, finest first, each width a multiple of the
# one before (UTC: Unix time has no leap seconds, so a multiple of 86400 is a UTC midnight).
# Every UTC offset of the time-zone database since the 1970s is a multiple of 15 minutes, so the
# 15-minute rollups tile the local hours and days of any zone (Asia/Kolkata, Asia/Kathmandu,
# Pacific/Chatham …) after the minute rollups have expired.
ROLLUP_TABLES = (
    ("metric_rollup_minute", 60),
    ("metric_rollup_15m", 900),
    ("metric_rollup_hour", 3600),
    ("metric_rollup_day", 86400),
)


def _rollup_columns(points: Sequence[PointRow]) -> list[list[str]]:
    """Pre-aggregate per (series, bucket) for each width, each level folded from the one below.

    Returns, per table, the columns (series_id, bucket epoch, count, sum, min, max) sorted by
    (series_id, bucket): one row per key, in one lock order for every writer; the 15-minute,
    hour and day tables also get `last` and `last_at`, the value and time of the bucket's latest
    point (of equal times, the later in the batch). The minute table does not: its rows are the
    many, and the Prometheus query API reads latest points from the coarser tables only.
    """
    level: dict[tuple[int, int], list] = {}
    for p in points:
        at = p.recorded_at.timestamp()
        epoch = int(at // 60) * 60
        key = (p.series_id, epoch)
        cur = level.get(key)
        value = p.value
        if cur is None:
            level[key] = [1, value, value, value, value, at]
        else:
            cur[0] += 1
            cur[1] += value
            if value < cur[2]:
                cur[2] = value
            if value > cur[3]:
                cur[3] = value
            if at >= cur[5]:
                cur[4] = value
                cur[5] = at
    out = [_as_columns(level, latest=False)]
    for _, width in ROLLUP_TABLES[1:]:
        folded: dict[tuple[int, int], list] = {}
        for (series_id, epoch), (count, total, low, high, last, last_at) in level.items():
            key = (series_id, epoch - epoch % width)
            cur = folded.get(key)
            if cur is None:
                folded[key] = [count, total, low, high, last, last_at]
            else:
                cur[0] += count
                cur[1] += total
                cur[2] = min(cur[2], low)
                cur[3] = max(cur[3], high)
                if last_at >= cur[5]:
                    cur[4] = last
                    cur[5] = last_at
        level = folded
        out.append(_as_columns(level, latest=True))
    return out


def _as_columns(level: dict[tuple[int, int], list], *, latest: bool) -> list[str]:
    items = sorted(level.items())
    return [
        _pg_array(key[0] for key, _ in items),
        _pg_array(key[1] for key, _ in items),
        *(_pg_array(agg[k] for _, agg in items) for k in range(6 if latest else 4)),
    ]


def _pg_array(values: Iterable[object]) -> str:
    """A PostgreSQL array literal of numbers.

    psycopg dumps a list element by element in Python (~30 ms for a 1000-point batch's rollups);
    joining reprs is done in C and PostgreSQL parses the literal faster still. repr() of a float
    is its shortest exact form, and values are validated finite, so nothing is lost.
    """
    return "{" + ",".join(map(repr, values)) + "}"


_UPSERT = """
{name} AS (
    INSERT INTO {table} AS r (series_id, bucket, count, sum, min, max)
    SELECT s, to_timestamp(b), c, t, lo, hi
    FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[], %s::float8[], %s::float8[], %s::float8[])
        AS u(s, b, c, t, lo, hi)
    ON CONFLICT (series_id, bucket) DO UPDATE SET
        count = r.count + excluded.count,
        sum = r.sum + excluded.sum,
        min = LEAST(r.min, excluded.min),
        max = GREATEST(r.max, excluded.max)
)"""

# The coarser levels also keep each bucket's latest point (migration 0013).
_UPSERT_LATEST = """
{name} AS (
    INSERT INTO {table} AS r (series_id, bucket, count, sum, min, max, last, last_at)
    SELECT s, to_timestamp(b), c, t, lo, hi, l, to_timestamp(la)
    FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[], %s::float8[], %s::float8[], %s::float8[],
                %s::float8[], %s::float8[])
        AS u(s, b, c, t, lo, hi, l, la)
    ON CONFLICT (series_id, bucket) DO UPDATE SET
        count = r.count + excluded.count,
        sum = r.sum + excluded.sum,
        min = LEAST(r.min, excluded.min),
        max = GREATEST(r.max, excluded.max),
        -- The latest point wins; of equal times, the later write. A bucket written before
        -- the columns existed (NULL) stays unknown: its earlier points' times are not kept.
        last = CASE WHEN r.last_at IS NULL THEN NULL
                    WHEN excluded.last_at >= r.last_at THEN excluded.last ELSE r.last END,
        last_at = CASE WHEN r.last_at IS NULL THEN NULL
                       ELSE GREATEST(r.last_at, excluded.last_at) END
)"""

_INSERT_POINTS = """
points AS (
    INSERT INTO metric_points (metric_id, series_id, value, recorded_at)
    SELECT m, s, v, to_timestamp(t)
    FROM unnest(%s::bigint[], %s::bigint[], %s::float8[], %s::float8[]) AS u(m, s, v, t)
)"""


class RefsGone(OperationalError):
    """A metric or series id of the write no longer exists: deleted by another process since it
    was cached. Nothing was written; retry from the database (an OperationalError, so a second
    failure is a 503 or a worker retry, like any transient database error)."""


# SQLSTATE raised by gf_refs_gone (migration 0010).
_REFS_GONE = "GF001"

# Every metric and series id of the write must still exist, counted in the statement's own
# snapshot; only when one is missing does the CASE call the PL/pgSQL function that raises. A
# delete committed after that snapshot is cleaned up by the delete's settle pass.
_ASSERT_REFS = """
refs AS (
    SELECT CASE
        WHEN (SELECT count(*) FROM metrics WHERE id = ANY(a.m)) = cardinality(a.m)
         AND (SELECT count(*) FROM series WHERE id = ANY(a.s)) = cardinality(a.s)
        THEN 1 ELSE gf_refs_gone() END AS ok
    FROM (SELECT %s::bigint[] AS m, %s::bigint[] AS s) AS a
)"""


@monitoring.db_write_timed
def points_write(points: Sequence[PointRow]) -> None:
    """Append raw points and fold them into the minute, 15-minute, hour and day rollups.

    The rollup upsert adds to what is there (count = count + excluded.count …), so concurrent
    writers to the same bucket stay exact, and rows are applied in (series, bucket) order so
    they never deadlock. Above COPY_THRESHOLD points it takes two statements and must run in
    a transaction; up to it, points and rollups go in one statement, atomic on its own. The
    statement also checks that every metric and series id still exists (RefsGone if not: see
    metrics/caches.py), so ids cached before a delete in another process write nothing.
    """
    if not points:
        return
    partitions.partitions_ensure_for({p.recorded_at.astimezone(UTC).date() for p in points})
    params: list = [
        _pg_array(sorted({p.metric_id for p in points})),
        _pg_array(sorted({p.series_id for p in points})),
    ]
    ctes = [_ASSERT_REFS]
    if len(points) > COPY_THRESHOLD:
        _copy_points(points)
    else:
        ctes.append(_INSERT_POINTS)
        params += [
            _pg_array(p.metric_id for p in points),
            _pg_array(p.series_id for p in points),
            _pg_array(p.value for p in points),
            _pg_array(p.recorded_at.timestamp() for p in points),
        ]
    for index, ((table, _), columns) in enumerate(
        zip(ROLLUP_TABLES, _rollup_columns(points), strict=True)
    ):
        upsert = _UPSERT if index == 0 else _UPSERT_LATEST
        ctes.append(upsert.format(name=f"r{index}", table=table))
        params += columns
    sql = "WITH " + ",".join(ctes) + " SELECT ok FROM refs"  # noqa: S608 - constants of this module
    try:
        _execute_server_bound(sql, params)
    except DatabaseError as exc:
        if getattr(exc.__cause__, "sqlstate", None) == _REFS_GONE:
            raise RefsGone(str(exc.__cause__)) from exc
        raise


def _execute_server_bound(sql: str, params: Sequence) -> None:
    """Run one statement with server-side parameters.

    Django's psycopg cursors bind client-side, escaping each parameter into the SQL text; these
    parameters are large array literals, sent as they are. The raw connection is the one
    Django's transaction is open on, so atomicity is unchanged, and its errors are wrapped as
    Django's (OperationalError for a lost connection or a timeout) like any other query's.
    """
    # What Django's own cursor() does first: a persistent connection the server has dropped
    # (a restart) is replaced here, not reported as a failed write.
    connection.close_if_health_check_failed()
    connection.ensure_connection()
    with connection.wrap_database_errors, psycopg.Cursor(connection.connection) as cursor:
        cursor.execute(sql, params)


def _copy_points(points: Sequence[PointRow]) -> None:
    # COPY is the fastest way into PostgreSQL (binary format skips text parsing).
    with connection.cursor() as cursor, connection.wrap_database_errors:
        raw = cursor.cursor  # the psycopg cursor under Django's wrapper
        with raw.copy(
            "COPY metric_points (metric_id, series_id, value, recorded_at) FROM STDIN (FORMAT BINARY)"
        ) as copy:
            copy.set_types(["int8", "int8", "float8", "timestamptz"])
            for p in points:
                copy.write_row((p.metric_id, p.series_id, p.value, p.recorded_at))


# How long a purge waits for the transactions that were open when it started (a write in one
# of them may still add rows for the deleted ids). Statements end within the statement timeout;
# a transaction idle for longer than this is not waited for.
PURGE_SETTLE_SECONDS = 10


def metric_and_series_delete(metric_id: int, *, now: datetime) -> int | None:
    """Delete a metric's row and its series rows, and record their purge; None if absent.

    One short transaction, whatever the metric holds: the points and rollups are left to
    `metric_rows_purge`, under the purge row whose id is returned. The metric row and its series
    are locked first (FOR UPDATE): a first write that resolved the metric in `metrics_upsert`
    holds it FOR KEY SHARE, so it finishes before, or waits and creates the metric anew. A write
    with cached ids that checked them just before the commit may still land after it (its
    snapshot predates the delete): the purge waits for it before it deletes.
    """
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT name FROM metrics WHERE id = %s FOR UPDATE", [metric_id])
        found = cursor.fetchone()
        if found is None:
            return None
        # New series of this metric need the same advisory lock as their creator takes.
        cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [locks.SERIES_NAMESPACE, metric_id])
        cursor.execute(
            "SELECT id FROM series WHERE metric_id = %s ORDER BY id FOR UPDATE", [metric_id]
        )
        series_ids = [row[0] for row in cursor.fetchall()]
        cursor.execute("DELETE FROM series WHERE metric_id = %s", [metric_id])
        cursor.execute("DELETE FROM metrics WHERE id = %s", [metric_id])
        cursor.execute(
            "INSERT INTO metric_purges (metric_id, name, series_ids, created_at)"
            " VALUES (%s, %s, %s, %s) RETURNING id",
            [metric_id, found[0], series_ids, now],
        )
        purge_id = cursor.fetchone()[0]
        transaction.on_commit(caches.caches_clear)
    return purge_id


def metric_rows_purge(purge_id: int) -> bool:
    """Delete the points and rollups a purge names, and the purge; False if it is not there (done
    already, or being done by another process right now).

    First waits (up to PURGE_SETTLE_SECONDS) for the transactions older than this call: one of
    them may be a write with cached ids adding rows under the old ids. Then one transaction of
    set-wise DELETEs on the existing indexes: points by (metric_id, recorded_at) in each day
    partition, rollups by their (series_id, bucket) primary keys, under METRIC_DELETE_TIMEOUT_MS
    rather than the connection's statement_timeout. Run twice, the second finds nothing to do.
    """
    with connection.cursor() as cursor:
        cursor.execute("SELECT now()")
        started = cursor.fetchone()[0]
        deadline = time.monotonic() + PURGE_SETTLE_SECONDS
        while time.monotonic() < deadline:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND pid <> pg_backend_pid() AND xact_start < %s",
                [started],
            )
            if not cursor.fetchone()[0]:
                break
            time.sleep(0.02)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "SELECT metric_id, series_ids FROM metric_purges WHERE id = %s FOR UPDATE SKIP LOCKED",
            [purge_id],
        )
        found = cursor.fetchone()
        if found is None:
            return False
        # Transaction-local; the previous value is put back for a caller's outer transaction.
        cursor.execute(
            "SELECT current_setting('statement_timeout'), set_config('statement_timeout', %s, true)",
            [f"{settings.METRIC_DELETE_TIMEOUT_MS}ms"],
        )
        previous = cursor.fetchone()[0]
        _points_and_rollups_delete(cursor, found[0], list(found[1]))
        cursor.execute("DELETE FROM metric_purges WHERE id = %s", [purge_id])
        cursor.execute("SELECT set_config('statement_timeout', %s, true)", [previous])
    return True


def _points_and_rollups_delete(cursor, metric_id: int, series_ids: list[int]) -> None:
    # Rollups coarsest first, as a write's statement locks them (PostgreSQL runs its
    # data-modifying CTEs last to first: day, hour, minute), so the two never wait on each
    # other in a cycle. By the ids the purge recorded: a late write's rollups carry them.
    for table, _ in reversed(ROLLUP_TABLES):
        cursor.execute(
            f"DELETE FROM {table} WHERE series_id = ANY(%s::bigint[])",  # noqa: S608 - fixed names
            [series_ids],
        )
    cursor.execute("DELETE FROM metric_points WHERE metric_id = %s", [metric_id])
    # Its compacted days too: their minute rollups live in these rows.
    cursor.execute("DELETE FROM metric_points_compact WHERE metric_id = %s", [metric_id])


# --- compaction of closed days (migration 0014) --------------------------------------------

# 10^k for the scales a compacted row may use: k decimals at most, and |value| * 10^k below
# 10^15, so that value = round(value * 10^k) / 10^k holds for any k at least the value's own
# (the rounding errors stay under a quarter): the compaction checks it all the same.
COMPACT_MAX_SCALE = 6
# How long one attempt to swap a day's tables may wait for a parent table's lock (reads and
# writes of other days queue behind the wait), how many attempts, and the pause between them.
SWAP_LOCK_TIMEOUT_MS = 50
SWAP_ATTEMPTS = 20
SWAP_RETRY_PAUSE_S = 0.1


class CompactionMismatch(Exception):
    """The compacted form would not give back the day's points or minute rollups exactly."""


class CompactionBusy(Exception):
    """A parent table stayed locked through every attempt of the swap."""


def _pt_scale(k: int) -> str:
    # Smallest number of decimals that gives the value back (NULL: none up to the maximum). A
    # negative zero keeps its sign only as text.
    checks = " ".join(
        f"WHEN round(value * 1e{i}) / 1e{i} = value THEN {i}" for i in range(COMPACT_MAX_SCALE + 1)
    )
    return f"CASE WHEN value = 0 AND value::text <> '0' THEN NULL {checks} END"


_POW10 = "'{1,10,100,1000,10000,100000,1000000}'::float8[]"
# The minutes of an hour, 0 to 59: a row's minute indexes are left NULL when they are its first n.
_MINUTES = "'{" + ",".join(str(minute) for minute in range(60)) + "}'::smallint[]"

# One sort of the day's points by (series, hour, time, id) serves every step: the row's scale
# (the largest of its points', unless a point has none or the largest value times 10^k would
# reach 10^15), the deltas, and the texts, aggregated in that order (no ORDER BY inside
# string_agg: PostgreSQL 15 would sort each group again). A row whose deltas after the first
# are all one (a regular scrape, or a single point) keeps that step in `tstep` and no `t`.
_COMPACT_INSERT = """
INSERT INTO {stage} (series_id, hour, metric_id, points, last_us, scale, tstep, t, v,
                     mminutes, mcounts, msums, mmins, mmaxes)
WITH p AS (
    SELECT metric_id, series_id, bucket_hour AS hour, id, value, recorded_at,
           round(date_part('epoch', recorded_at - bucket_hour) * 1000000)::bigint AS us,
           {scale} AS k
    FROM {raw}
),
s AS (
    SELECT p.*,
           CASE WHEN bool_and(k IS NOT NULL) OVER g
                 AND max(abs(value)) OVER g * ({pow10})[max(k) OVER g + 1] < 1e15
                THEN max(k) OVER g END::smallint AS scale,
           us - coalesce(lag(us) OVER o, 0) AS td,
           lag(us) OVER o IS NULL AS first
    FROM p
    WINDOW g AS (PARTITION BY series_id, hour),
           o AS (PARTITION BY series_id, hour ORDER BY recorded_at, id)
),
d AS (
    SELECT series_id, hour, metric_id, recorded_at, id, value, us, scale, td, first,
           vi - coalesce(lag(vi) OVER (PARTITION BY series_id, hour ORDER BY recorded_at, id), 0)
               AS vd
    FROM (SELECT s.*, CASE WHEN scale IS NOT NULL
                           THEN round(value * ({pow10})[scale + 1])::bigint END AS vi
          FROM s) x
    ORDER BY series_id, hour, recorded_at, id
),
c AS (
    SELECT series_id, hour, min(metric_id) AS metric_id, count(*)::int AS points,
           max(us) AS last_us, min(scale) AS scale,
           min(td) FILTER (WHERE NOT first) AS step_min,
           max(td) FILTER (WHERE NOT first) AS step_max, string_agg(td::text, ',') AS t,
           CASE WHEN min(scale) IS NOT NULL THEN string_agg(vd::text, ',')
                ELSE string_agg(value::text, ',') END AS v
    FROM d GROUP BY series_id, hour
),
m AS (
    SELECT series_id, date_trunc('hour', bucket AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS hour,
           array_agg(date_part('minute', bucket AT TIME ZONE 'UTC')::smallint ORDER BY bucket)
               AS mminutes,
           array_agg(count::integer ORDER BY bucket) AS mcounts,
           array_agg(sum ORDER BY bucket) AS msums,
           array_agg(min ORDER BY bucket) AS mmins,
           array_agg(max ORDER BY bucket) AS mmaxes
    FROM {minute} GROUP BY 1, 2
)
SELECT c.series_id, c.hour, c.metric_id, c.points, c.last_us, c.scale,
       CASE WHEN c.step_min IS NOT DISTINCT FROM c.step_max THEN coalesce(c.step_min, 0) END,
       CASE WHEN c.step_min IS DISTINCT FROM c.step_max THEN c.t END, c.v,
       CASE WHEN m.mminutes IS DISTINCT FROM ({minutes})[1:cardinality(m.mminutes)]
            THEN m.mminutes END,
       coalesce(m.mcounts, '{{}}'), coalesce(m.msums, '{{}}'), coalesce(m.mmins, '{{}}'),
       coalesce(m.mmaxes, '{{}}')
FROM c LEFT JOIN m USING (series_id, hour)
"""

# Series-hours whose decoded points differ from the raw ones: per row, the count and a sum of
# hashes of (time, value) pairs (the value's bits seed by its time) and the negative zeros; plus
# minute rollups whose count, minimum or maximum differ from the points' (bit for bit), or that
# exist on one side only. No sort: the day is read once more on each side.
_COMPACT_CHECK = """
SELECT
  (SELECT count(*) FROM (
      SELECT series_id, bucket_hour AS hour, count(*) AS n,
             sum(hashfloat8extended(value, (extract(epoch FROM recorded_at) * 1000000)::bigint))
                 AS h,
             count(*) FILTER (WHERE value = 0 AND value::text = '-0') AS z
      FROM {raw} GROUP BY 1, 2
  ) a FULL JOIN (
      SELECT c.series_id, c.hour, count(*) AS n,
             sum(hashfloat8extended(d.value, (extract(epoch FROM c.hour) * 1000000)::bigint + d.us))
                 AS h,
             count(*) FILTER (WHERE d.value = 0 AND d.value::text = '-0') AS z
      FROM {stage} c CROSS JOIN LATERAL gf_compact_points(c.t, c.v, c.scale, c.points, c.last_us, c.tstep) d
      GROUP BY 1, 2
  ) b USING (series_id, hour)
  WHERE a.n IS DISTINCT FROM b.n OR a.h IS DISTINCT FROM b.h OR a.z IS DISTINCT FROM b.z),
  (SELECT count(*) FROM {minute} r FULL JOIN (
      SELECT series_id, date_trunc('minute', recorded_at) AS bucket, count(*) AS count,
             min(value) AS min, max(value) AS max
      FROM {raw} GROUP BY 1, 2
  ) x USING (series_id, bucket)
  WHERE r.count IS DISTINCT FROM x.count
     OR float8send(r.min) IS DISTINCT FROM float8send(x.min)
     OR float8send(r.max) IS DISTINCT FROM float8send(x.max))
"""


@dataclass(frozen=True)
class DayCompacted:
    points: int
    rows: int
    raw_bytes: int
    compact_bytes: int


def _relation_bytes(cursor, table: str) -> int:
    cursor.execute("SELECT coalesce(pg_total_relation_size(to_regclass(%s)), 0)", [table])
    return cursor.fetchone()[0]


def day_tables(day) -> tuple[str, str, str]:
    """The raw point, minute rollup and compacted partitions of a UTC day."""
    suffix = day.strftime("%Y%m%d")
    return (
        f"metric_points_{suffix}",
        f"metric_rollup_minute_{suffix}",
        f"metric_points_compact_{suffix}",
    )


def raw_days() -> list:
    """UTC days that have a raw point partition and are not marked compacted, oldest first."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT to_date(right(c.relname, 8), 'YYYYMMDD') AS day
            FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
            WHERE i.inhparent = 'metric_points'::regclass AND c.relname ~ '_[0-9]{8}$'
              AND NOT EXISTS (SELECT 1 FROM metric_compacted_days d
                              WHERE d.day = to_date(right(c.relname, 8), 'YYYYMMDD'))
            ORDER BY 1
            """
        )
        return [row[0] for row in cursor.fetchall()]


def compacted_days() -> list[tuple]:
    """(day, points, rows, seconds) of every compacted day, oldest first."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT day, points, rows, seconds FROM metric_compacted_days ORDER BY day")
        return cursor.fetchall()


def day_compact(day, *, seconds_so_far) -> DayCompacted | None:
    """Rewrite one UTC day's raw points into metric_points_compact and drop its raw point and
    minute rollup partitions, in one transaction: a reader sees the day raw or compacted, never
    both nor neither, and a process killed at any moment leaves the day as it was. Returns None
    when the day is already compacted or has no raw partition, or another compaction runs.

    `seconds_so_far` (a callable) gives the duration recorded with the day's marker.
    """
    raw, minute, compact = day_tables(day)
    stage = compact
    lo = datetime(day.year, day.month, day.day, tzinfo=UTC)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_try_advisory_xact_lock(%s, %s)", [locks.NAMESPACE, locks.COMPACTION_RUN]
        )
        if not cursor.fetchone()[0]:
            return None
        cursor.execute(
            "SELECT to_regclass(%s) IS NOT NULL, EXISTS (SELECT 1 FROM metric_compacted_days"
            " WHERE day = %s)",
            [raw, day],
        )
        raw_exists, marked = cursor.fetchone()
        if not raw_exists or marked:
            return None
        # A whole day is read and written: the API's statement limit does not apply. Exact
        # float texts for the values that no scale gives back.
        cursor.execute(
            "SET LOCAL statement_timeout = 0; SET LOCAL extra_float_digits = 1;"
            " SET LOCAL work_mem = '256MB'"
        )
        minute_exists = _exists(cursor, minute)
        minute_source = minute if minute_exists else "(SELECT * FROM metric_rollup_minute LIMIT 0)"
        raw_bytes = _relation_bytes(cursor, raw) + _relation_bytes(cursor, minute)
        # A table of its own, attached once filled: CREATE TABLE … PARTITION OF would hold the
        # parent's ACCESS EXCLUSIVE lock (every other day's reads) until this transaction ends;
        # ATTACH takes SHARE UPDATE EXCLUSIVE, which reads and writes pass. The CHECK constraint
        # spares ATTACH its scan of the rows.
        cursor.execute(
            f"CREATE TABLE {stage} (LIKE metric_points_compact INCLUDING DEFAULTS"
            " INCLUDING CONSTRAINTS INCLUDING COMPRESSION INCLUDING STORAGE)"
            f" WITH (toast_tuple_target = 128)"
        )
        cursor.execute(
            f"ALTER TABLE {stage} ADD CONSTRAINT {stage}_day CHECK (hour >= %s AND hour < %s)",
            [lo, lo + timedelta(days=1)],
        )
        cursor.execute(
            _COMPACT_INSERT.format(
                stage=stage,
                raw=raw,
                minute=minute_source,
                scale=_pt_scale(COMPACT_MAX_SCALE),
                pow10=_POW10,
                minutes=_MINUTES,
            )
        )
        rows = cursor.rowcount
        cursor.execute(_COMPACT_CHECK.format(stage=stage, raw=raw, minute=minute_source))
        bad_points, bad_minutes = cursor.fetchone()
        if bad_points or bad_minutes:
            raise CompactionMismatch(
                f"{day}: {bad_points} series-hours decode differently, {bad_minutes} minute"
                " rollups differ from the points"
            )
        cursor.execute(f"SELECT coalesce(sum(points), 0) FROM {stage}")  # noqa: S608 - a day's name
        points = cursor.fetchone()[0]
        cursor.execute(f"CREATE UNIQUE INDEX ON {stage} (series_id, hour)")
        cursor.execute(f"CREATE INDEX ON {stage} (metric_id, hour)")
        _with_parent_locks(
            cursor,
            [
                f"ALTER TABLE metric_points_compact ATTACH PARTITION {stage}"
                f" FOR VALUES FROM ('{lo.isoformat()}') TO ('{(lo + timedelta(days=1)).isoformat()}')",
                f"DROP TABLE {raw}",
                *([f"DROP TABLE {minute}"] if minute_exists else []),
            ],
        )
        cursor.execute(f"ALTER TABLE {stage} DROP CONSTRAINT {stage}_day")
        cursor.execute(f"ANALYZE {stage}")
        compact_bytes = _relation_bytes(cursor, stage)
        cursor.execute(
            "INSERT INTO metric_compacted_days (day, points, rows, seconds, compacted_at)"
            " VALUES (%s, %s, %s, %s, now())",
            [day, points, rows, seconds_so_far()],
        )
    return DayCompacted(points=points, rows=rows, raw_bytes=raw_bytes, compact_bytes=compact_bytes)


def _exists(cursor, table: str) -> bool:
    cursor.execute("SELECT to_regclass(%s) IS NOT NULL", [table])
    return cursor.fetchone()[0]


def _with_parent_locks(cursor, statements: list[str]) -> None:
    """Run statements that lock a parent table, each wait bounded by SWAP_LOCK_TIMEOUT_MS and
    tried again after a pause: the rest of the transaction is kept (savepoints)."""
    for statement in statements:
        for attempt in range(SWAP_ATTEMPTS):
            cursor.execute("SAVEPOINT gf_swap")
            cursor.execute(f"SET LOCAL lock_timeout = '{SWAP_LOCK_TIMEOUT_MS}ms'")
            try:
                cursor.execute(statement)
            except DatabaseError as exc:
                if getattr(exc.__cause__, "sqlstate", None) not in ("55P03", "40P01"):
                    raise
                cursor.execute("ROLLBACK TO SAVEPOINT gf_swap")
                if attempt == SWAP_ATTEMPTS - 1:
                    raise CompactionBusy(statement) from None
                time.sleep(SWAP_RETRY_PAUSE_S)
                continue
            cursor.execute("SET LOCAL lock_timeout = 0")
            cursor.execute("RELEASE SAVEPOINT gf_swap")
            break


# Tables holding points and rollups, by kind, for the bytes-on-disk gauge.
TABLE_KINDS = {
    "raw": ("metric_points",),
    "minute": ("metric_rollup_minute",),
    "compact": ("metric_points_compact",),
    "rollups": ("metric_rollup_15m", "metric_rollup_hour", "metric_rollup_day"),
}


def bytes_by_kind() -> dict[str, int]:
    """Bytes on disk (heap, TOAST and indexes of every partition) per kind of table: sizes the
    catalog knows, so the cost is a catalog read whatever the tables hold."""
    parents = [(kind, table) for kind, tables in TABLE_KINDS.items() for table in tables]
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT p.kind, coalesce(sum(pg_total_relation_size(i.inhrelid)), 0)::bigint
                   + coalesce(max(pg_total_relation_size(to_regclass(p.parent))), 0)
            FROM unnest(%s::text[], %s::text[]) AS p(kind, parent)
            LEFT JOIN pg_inherits i ON i.inhparent = to_regclass(p.parent)
            GROUP BY p.kind
            """,
            [[kind for kind, _ in parents], [table for _, table in parents]],
        )
        found = dict(cursor.fetchall())
    return {kind: found.get(kind, 0) for kind in TABLE_KINDS}
