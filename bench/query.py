"""Query latency over HTTP, rollup-backed and raw, on a month of points.

    make bench-query                        # or, with DATABASE_URL and REDIS_URL set:
    python -m bench.query --requests 30

Loads, with generate_series in SQL, --points raw points (default 10M) for one value metric over
--days days (default 30) and --tagged-points (default 1M) for a second one spread over 10 tag
sets (host=h0…h9), builds their minute, hour and day rollups with INSERT … SELECT … GROUP BY,
serves the application under gunicorn (2 workers, deploy/gunicorn.conf.py, DEBUG off) and
measures GET /api/metrics/{name} from one sequential client:

  hour x 7 days sum · minute x 1 day avg · day x 30 days max (UTC, then Europe/Berlin) ·
  hour x 7 days group_by host over 10 series · hour x 7 days sum of the 1M-point metric ·
  p95 over 1 day (hour buckets, raw points)

and, in the same run, the hour x 7 days sum as a raw `date_trunc … GROUP BY` scan over
metric_points, sent straight to PostgreSQL (no HTTP: a lower bound for the raw approach).
Prints a table and checks the targets: rollup-backed p95 ≤ 20 ms, ≥ 50x faster than the raw
scan, the 1M- and 10M-point metrics within 1.5x of each other.

With --explain, also prints EXPLAIN (ANALYZE, BUFFERS) of the SQL each query shape runs,
captured from the selectors themselves.

Everything happens in a database of its own (gf_bench_query) on the server named by
DATABASE_URL; it is dropped at exit.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from bench import _bulk, _common, _options, _reads, _runners, _servers

DATABASE_NAME = "gf_bench_query"
BIG = "bench.latency"
TAGGED = "bench.latency.tagged"
TAG_SETS = 10
TARGET_P95_MS = 20.0
TARGET_RAW_RATIO = 50.0
TARGET_SIZE_RATIO = 1.5


# --- loading ---------------------------------------------------------------------------------


def load(url: str, *, points: int, tagged_points: int, days: int, end: datetime) -> dict:
    """Create both metrics with their series, points and rollups; return their ids."""
    import psycopg

    start = end - timedelta(days=days)
    span_us = days * 86400 * 10**6
    ids, jobs = {}, []
    with psycopg.connect(url, autocommit=True) as conn:
        # Timestamps are truncated in UTC, as the write path does.
        conn.execute("SET TIME ZONE 'UTC'")
        _bulk.partitions_ensure(conn, start, end)
        for name, count, series in ((BIG, points, 1), (TAGGED, tagged_points, TAG_SETS)):
            metric = _bulk.metric_create(conn, name)
            ids[name] = metric
            first = None
            for i in range(series):
                tags = {} if series == 1 else {"host": f"h{i}"}
                canonical = json.dumps(tags, separators=(",", ":"))
                row = _bulk.series_create(conn, metric, canonical)
                first = row if first is None else first
            # Series ids are consecutive (one sequence, one session): first + i % n is each.
            # Each metric is loaded in two halves, so two sessions keep both cores busy.
            step = span_us // count
            for lo, hi in ((0, count // 2), (count // 2, count)):
                jobs.append(
                    (
                        _bulk.LOAD_SQL,
                        {
                            "metric": metric,
                            "first_series": first,
                            "series": series,
                            "start": start,
                            "step": step,
                            "lo": lo,
                            "hi": hi,
                        },
                    )
                )
        for index in _bulk.POINT_INDEXES:
            conn.execute(f"DROP INDEX {index}")
        # A whole minute, so no minute falls in both halves.
        middle = (start + (end - start) / 2).replace(second=0, microsecond=0)
        halves = [{"lo": start, "hi": middle}, {"lo": middle, "hi": end + timedelta(days=1)}]
        _bulk.points_and_rollups_finish(conn, url, jobs, halves=halves)
    return ids


# --- measuring -------------------------------------------------------------------------------


RAW_SQL = """
SELECT date_trunc('hour', recorded_at) AS hour, sum(value)
FROM metric_points
WHERE metric_id = %s AND recorded_at >= %s AND recorded_at < %s
GROUP BY 1 ORDER BY 1
"""


def measure_raw(url: str, metric: int, start: datetime, end: datetime, *, runs: int) -> list[float]:
    import psycopg

    samples = []
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET TIME ZONE 'UTC'")
        conn.execute(RAW_SQL, [metric, start, end]).fetchall()  # warm-up
        for _ in range(runs):
            started = time.perf_counter()
            conn.execute(RAW_SQL, [metric, start, end]).fetchall()
            samples.append((time.perf_counter() - started) * 1000)
    return samples


def shapes(end: datetime) -> list[tuple[str, str, dict, bool]]:
    """(label, metric, query parameters, rollup-backed) of every measured request."""
    hour_end = end.replace(minute=0, second=0, microsecond=0)
    day_end = end.replace(hour=0, minute=0, second=0, microsecond=0)
    week = {"from": (hour_end - timedelta(days=7)).isoformat(), "to": hour_end.isoformat()}
    return [
        ("hour x 7 d sum", BIG, {**week, "interval": "hour", "aggregation": "sum"}, True),
        (
            "minute x 1 d avg",
            BIG,
            {
                "from": (end - timedelta(days=1)).replace(second=0, microsecond=0).isoformat(),
                "to": end.replace(second=0, microsecond=0).isoformat(),
                "interval": "minute",
                "aggregation": "avg",
            },
            True,
        ),
        (
            "day x 30 d max",
            BIG,
            {
                "from": (day_end - timedelta(days=30)).isoformat(),
                "to": day_end.isoformat(),
                "interval": "day",
                "aggregation": "max",
            },
            True,
        ),
        (
            "day x 30 d max, Europe/Berlin",
            BIG,
            {
                "from": (day_end - timedelta(days=30)).isoformat(),
                "to": day_end.isoformat(),
                "interval": "day",
                "aggregation": "max",
                "tz": "Europe/Berlin",
            },
            True,
        ),
        (
            "day x 30 d max, Asia/Kolkata",
            BIG,
            {
                "from": (day_end - timedelta(days=30)).isoformat(),
                "to": day_end.isoformat(),
                "interval": "day",
                "aggregation": "max",
                "tz": "Asia/Kolkata",
            },
            True,
        ),
        (
            "hour x 7 d sum, group_by host (10 series)",
            TAGGED,
            {**week, "interval": "hour", "aggregation": "sum", "group_by": "host"},
            True,
        ),
        (
            "hour x 7 d sum, 1M-point metric",
            TAGGED,
            {**week, "interval": "hour", "aggregation": "sum"},
            True,
        ),
        (
            "p95 x 1 d (hour buckets, raw points)",
            BIG,
            {
                "from": (hour_end - timedelta(days=1)).isoformat(),
                "to": hour_end.isoformat(),
                "interval": "hour",
                "aggregation": "p95",
            },
            False,
        ),
    ]


# --- EXPLAIN ---------------------------------------------------------------------------------


def explain_all(end: datetime) -> None:
    """Print EXPLAIN (ANALYZE, BUFFERS) of the SQL of each shape (runs inside Django)."""
    import django

    django.setup()
    from django.db import connection

    from metrics import selectors

    plans: list[str] = []

    def capture(execute, sql, params, many, context):
        if "width_bucket" in sql and not sql.startswith("EXPLAIN"):
            with connection.cursor() as cursor:
                cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql, params)
                plans.append("\n".join(row[0] for row in cursor.fetchall()))
        return execute(sql, params, many, context)

    for label, name, params, _ in shapes(end):
        query = selectors.SeriesQuery(
            metric=selectors.metric_get(name=name),
            start=datetime.fromisoformat(params["from"]),
            end=datetime.fromisoformat(params["to"]),
            interval=params["interval"],
            aggregation=params["aggregation"],
            tz=ZoneInfo(params.get("tz", "UTC")),
            fill="null",
            group_by=params.get("group_by"),
        )
        selectors.series_query(query=query)  # warm the cache, as the HTTP figures are warm
        plans.clear()
        with connection.execute_wrapper(capture):
            selectors.series_query(query=query)
        print(f"### {label}\n")
        for plan in plans:
            print(plan + "\n")
    with connection.cursor() as cursor:
        metric = selectors.metric_get(name=BIG).pk
        week = next(p for label, _, p, _ in shapes(end) if label == "hour x 7 d sum")
        cursor.execute(
            "EXPLAIN (ANALYZE, BUFFERS) " + RAW_SQL,
            [metric, datetime.fromisoformat(week["from"]), datetime.fromisoformat(week["to"])],
        )
        print("### raw scan: hour x 7 d sum over metric_points\n")
        print("\n".join(row[0] for row in cursor.fetchall()) + "\n")


# --- report ----------------------------------------------------------------------------------


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=10_000_000)
    parser.add_argument("--tagged-points", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=30)
    _options.read_options(parser)
    parser.add_argument("--raw-runs", type=int, default=10)
    parser.add_argument("--explain", action="store_true", help="also print the query plans")
    parser.add_argument("--explain-only", help=argparse.SUPPRESS)  # internal: end time
    args = parser.parse_args(argv)
    if args.explain_only:
        explain_all(datetime.fromisoformat(args.explain_only))
        return 0
    if args.requests < 30:
        parser.error("--requests must be at least 30")

    end = datetime.now(UTC).replace(microsecond=0)
    began = time.perf_counter()
    with _runners.scratch(DATABASE_NAME, key_name="bench-query") as run:
        bench_url, env, machine, key = run.database_url, run.env, run.machine, run.key
        ids = load(
            bench_url, points=args.points, tagged_points=args.tagged_points, days=args.days, end=end
        )
        loaded = time.perf_counter() - began
        results = []
        paths = {_reads.FLOOR: "/api/keys/me"}
        paths |= {label: f"/api/metrics/{name}?{urlencode(p)}" for label, name, p, _ in shapes(end)}
        with _servers.gunicorn(env, workers=2) as (host, port):
            samples, bodies = _reads.measure_http(
                host, port, key, paths, requests=args.requests, warmup=args.warmup
            )
        for label, _, _, rollup in [(_reads.FLOOR, None, None, None), *shapes(end)]:
            body = bodies[label]
            if "groups" in body:
                buckets = len(body["groups"]) * len(body["groups"][0]["buckets"])
            else:
                buckets = len(body.get("buckets", []))
            results.append((label, rollup, samples[label], buckets))
        week = shapes(end)[0][2]
        raw = measure_raw(
            bench_url,
            ids[BIG],
            datetime.fromisoformat(week["from"]),
            datetime.fromisoformat(week["to"]),
            runs=args.raw_runs,
        )
        if args.explain:
            subprocess.run(
                [sys.executable, "-m", "bench.query", "--explain-only", end.isoformat()],
                env={**env, "QUERY_SLOW_MS": "600000"},
                cwd=_common.ROOT,
                check=True,
            )
    report(args, machine, loaded, results, raw)
    return 0


def report(args, machine: str, loaded: float, results: list, raw: list[float]) -> None:
    fmt = _reads.ms_text
    print()
    print(f"Machine: {machine}")
    print(
        f"Data: {args.points:,} points (1 series) + {args.tagged_points:,} points "
        f"({TAG_SETS} series) over {args.days} days; loaded with rollups in {loaded:.0f} s"
    )
    print(f"HTTP: gunicorn 2 sync workers, one sequential client, {args.requests} requests each")
    print()
    print(f"| {'query':<42} | {'buckets':>7} | {'median ms':>9} | {'p95 ms':>7} |")
    print(f"| {'-' * 42} | {'-' * 7}:| {'-' * 9}:| {'-' * 7}:|")
    for label, _, samples, buckets in results:
        p95 = _common.percentile(samples, 95)
        print(
            f"| {label:<42} | {buckets:>7} | {fmt(statistics.median(samples)):>9} | {fmt(p95):>7} |"
        )
    raw_median, raw_p95 = statistics.median(raw), _common.percentile(raw, 95)
    label = "raw scan hour x 7 d sum (SQL only, no HTTP)"
    print(f"| {label:<42} | {168:>7} | {fmt(raw_median):>9} | {fmt(raw_p95):>7} |")
    print()
    rollup_p95 = max(_common.percentile(s, 95) for _, rollup, s, _ in results if rollup)
    week = statistics.median(next(s for label, _, s, _ in results if label == "hour x 7 d sum"))
    small = statistics.median(next(s for label, _, s, _ in results if "1M-point" in label))
    raw_ratio = raw_median / week
    size_ratio = max(week, small) / min(week, small)
    checks = [
        (
            f"rollup-backed p95 ≤ {TARGET_P95_MS:.0f} ms",
            f"{rollup_p95:.1f} ms",
            rollup_p95 <= TARGET_P95_MS,
        ),
        (
            f"raw scan / rollups ≥ {TARGET_RAW_RATIO:.0f}x",
            f"{raw_ratio:.0f}x",
            raw_ratio >= TARGET_RAW_RATIO,
        ),
        (
            f"10M-point vs 1M-point metric within {TARGET_SIZE_RATIO}x",
            f"{size_ratio:.2f}x",
            size_ratio <= TARGET_SIZE_RATIO,
        ),
    ]
    for name, value, passed in checks:
        print(f"{'PASS' if passed else 'FAIL'}  {name}: {value}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
