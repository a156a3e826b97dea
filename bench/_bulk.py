"""Bulk loading of points and rollups straight into PostgreSQL, for the benchmarks that need a
month of data (bench/query.py, bench/explore.py): generate_series in SQL, two sessions at once."""

from __future__ import annotations

import time
from datetime import datetime, timedelta

from bench._common import log

# Every table a point lands in.
TABLES = (
    "metric_points",
    "metric_rollup_minute",
    "metric_rollup_15m",
    "metric_rollup_hour",
    "metric_rollup_day",
)

LOAD_SQL = """
INSERT INTO metric_points (metric_id, series_id, value, recorded_at)
SELECT %(metric)s,
       %(first_series)s + (i %% %(series)s),
       -- a skewed latency-like value: mostly small, a long tail
       round((5 + 100 * random() ^ 4)::numeric, 3)::float8,
       %(start)s::timestamptz + (i * %(step)s) * interval '1 microsecond'
FROM generate_series(%(lo)s::bigint, %(hi)s::bigint - 1) AS i
"""

# The migration's two indexes on metric_points, dropped during the bulk load and rebuilt after
# (building an index once is several times faster than maintaining it row by row).
POINT_INDEXES = {
    "metric_points_metric_recorded": "metric_points (metric_id, recorded_at)",
    "metric_points_metric_hour": "metric_points (metric_id, bucket_hour)",
}

# Rollups as the write path keeps them: minute from the points, hour from minutes, day from
# hours, all UTC-aligned. The minute pass is split by time so two sessions share it.
ROLLUP_MINUTE_SQL = """
INSERT INTO metric_rollup_minute (series_id, bucket, count, sum, min, max)
SELECT series_id, date_trunc('minute', recorded_at), count(*), sum(value), min(value), max(value)
FROM metric_points WHERE recorded_at >= %(lo)s AND recorded_at < %(hi)s GROUP BY 1, 2
"""
ROLLUP_COARSER_SQL = """
INSERT INTO {target} (series_id, bucket, count, sum, min, max)
SELECT series_id, date_bin('{width}', bucket, timestamptz 'epoch'),
       sum(count), sum(sum), min(min), max(max)
FROM {source} GROUP BY 1, 2
"""


def timed(label: str, action) -> None:
    started = time.perf_counter()
    action()
    log(f"{label} in {time.perf_counter() - started:.1f} s")


def parallel(url: str, jobs: list[tuple[str, dict]]) -> None:
    """Run the statements two at a time, each in its own session (one per core)."""
    from concurrent.futures import ThreadPoolExecutor

    import psycopg

    def run(job: tuple[str, dict]) -> None:
        sql, params = job
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("SET TIME ZONE 'UTC'")
            conn.execute(sql, params)

    # psycopg releases the GIL while PostgreSQL works, so threads give one busy backend each.
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(run, jobs))


def partitions_ensure(conn, start: datetime, end: datetime) -> None:
    """Day partitions of the points and minute rollups for [start, end], a day either side."""
    for table in ("metric_points", "metric_rollup_minute"):
        conn.execute(
            "SELECT gf_ensure_day_partitions(%s, %s::date, %s::date)",
            [table, start.date() - timedelta(days=1), end.date() + timedelta(days=1)],
        )


def metric_create(conn, name: str) -> int:
    """A value metric `name`; its id."""
    return conn.execute(
        "INSERT INTO metrics (name, type, created_at) VALUES (%s, 'value', now()) RETURNING id",
        [name],
    ).fetchone()[0]


def series_create(conn, metric: int, canonical: str) -> int:
    """A series of `metric` with the tags `canonical` (their canonical JSON); its id."""
    return conn.execute(
        "INSERT INTO series (metric_id, tags, tags_hash, created_at) "
        "VALUES (%s, %s::jsonb, md5(%s)::uuid, now()) RETURNING id",
        [metric, canonical, canonical],
    ).fetchone()[0]


def points_and_rollups_finish(
    conn, url: str, jobs: list[tuple[str, dict]], *, halves: list[dict]
) -> None:
    """Run the point-loading `jobs` (the indexes already dropped), rebuild the indexes, build the
    minute rollups in the two time `halves` ({"lo", "hi"}) and the coarser ones from them, then
    vacuum, analyze and checkpoint, so the measurements start from settled tables."""
    timed("points", lambda: parallel(url, jobs))
    timed(
        "indexes",
        lambda: parallel(url, [(f"CREATE INDEX {n} ON {d}", {}) for n, d in POINT_INDEXES.items()]),
    )
    timed("minute rollups", lambda: parallel(url, [(ROLLUP_MINUTE_SQL, h) for h in halves]))
    for target, width, source in (
        ("metric_rollup_15m", "15 minutes", "metric_rollup_minute"),
        ("metric_rollup_hour", "1 hour", "metric_rollup_15m"),
        ("metric_rollup_day", "1 day", "metric_rollup_hour"),
    ):
        sql = ROLLUP_COARSER_SQL.format(target=target, width=width, source=source)
        timed(f"{target} rollups", lambda sql=sql: conn.execute(sql))
    tables = [*TABLES, "series", "metrics"]
    timed("vacuum analyze", lambda: [conn.execute(f"VACUUM (ANALYZE) {t}") for t in tables])
    # Write the loaded pages out now rather than during the measurements.
    timed("checkpoint", lambda: conn.execute("CHECKPOINT"))
