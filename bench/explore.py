"""Discovery and delete over HTTP: GET /api/metrics among 10,000 metrics, DELETE of a big metric.

    make bench-explore                       # or, with DATABASE_URL and REDIS_URL set:
    python -m bench.explore --points 10000000 --delete-points 1000000

Loads, with generate_series in SQL:
  - --metrics (default 10,000) small counter metrics `bench.m.00000`…, one series each, with
    two points each in the last day (so every one has rollups and a `last_point_at`);
  - `bench.delete` and `bench.delete.direct`, --delete-points (default 1,000,000) points each
    over 10 series and --days days;
  - `bench.other`, the rest of --points (default 10,000,000 in all) over 10 series;
then builds their minute, hour and day rollups, serves the application under gunicorn
(2 workers, deploy/gunicorn.conf.py, DEBUG off) and measures from one sequential client:

  GET /api/metrics first page (limit 100), a deep page (cursor near the end), limit 1000,
  a search (substring over every name), a prefix, GET /api/series and /api/tags of a metric

and then DELETE /api/metrics/bench.delete with an admin key, once, timed end to end (the metric
is hidden; its rows are left to the purge), then its purge as a worker runs it, timed, checking
afterwards that no row of it is left in metrics, series, metric_points or any rollup table;
then `storage.metric_and_series_delete` and `storage.metric_rows_purge` of
`bench.delete.direct` in a `manage.py shell`, timed statement by statement (where the time of a delete goes).
Prints a table and checks the targets: first and deep page within 1.5x of each other, the
delete ≤ 1 s.

Everything happens in a database of its own (gf_bench_explore) on the server named by
DATABASE_URL; it is dropped at exit.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

from bench import _bulk, _common, _options, _reads, _runners, _servers

DATABASE_NAME = "gf_bench_explore"
DELETED = "bench.delete"
DELETED_DIRECT = "bench.delete.direct"
OTHER = "bench.other"
SERIES = 10
TARGET_DELETE_S = 1.0
TARGET_DEPTH_RATIO = 1.5
TABLES = _bulk.TABLES

SMALL_METRICS_SQL = """
INSERT INTO metrics (name, type, created_at)
SELECT 'bench.m.' || lpad(i::text, 5, '0'), 'counter', now()
FROM generate_series(0, %(count)s - 1) AS i
"""
SMALL_SERIES_SQL = """
INSERT INTO series (metric_id, tags, tags_hash, created_at)
SELECT id, '{"host":"h1"}'::jsonb, md5('{"host":"h1"}')::uuid, now()
FROM metrics WHERE name LIKE 'bench.m.%%'
"""
SMALL_POINTS_SQL = """
INSERT INTO metric_points (metric_id, series_id, value, recorded_at)
SELECT s.metric_id, s.id, 1, %(end)s::timestamptz - (s.id %% 1440 + k * 7) * interval '1 minute'
FROM series s JOIN metrics m ON m.id = s.metric_id, generate_series(0, 1) AS k
WHERE m.name LIKE 'bench.m.%%'
"""


INTERLEAVED_SQL = """
INSERT INTO metric_points (metric_id, series_id, value, recorded_at)
SELECT CASE i %% %(every)s WHEN 0 THEN %(a)s WHEN 1 THEN %(b)s ELSE %(c)s END,
       CASE i %% %(every)s WHEN 0 THEN %(a_series)s WHEN 1 THEN %(b_series)s
            ELSE %(c_series)s END + (i / %(every)s) %% %(series)s,
       round((5 + 100 * random() ^ 4)::numeric, 3)::float8,
       %(start)s::timestamptz + (i * %(step)s) * interval '1 microsecond'
FROM generate_series(%(lo)s::bigint, %(hi)s::bigint - 1) AS i
"""


def load(
    url: str,
    *,
    metrics: int,
    points: int,
    delete_points: int,
    days: int,
    end: datetime,
    layout: str,
) -> None:
    """Create the small metrics and the three big ones with their series, points and rollups."""
    import psycopg

    start = end - timedelta(days=days)
    span_us = days * 86400 * 10**6
    jobs = []
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET TIME ZONE 'UTC'")
        _bulk.partitions_ensure(conn, start, end)
        conn.execute(SMALL_METRICS_SQL, {"count": metrics})
        conn.execute(SMALL_SERIES_SQL)
        for index in _bulk.POINT_INDEXES:
            conn.execute(f"DROP INDEX {index}")
        conn.execute(SMALL_POINTS_SQL, {"end": end})
        big = [(DELETED, delete_points), (DELETED_DIRECT, delete_points)]
        big.append((OTHER, points - 2 * delete_points - 2 * metrics))
        firsts = {}
        for name, _ in big:
            metric = _bulk.metric_create(conn, name)
            for i in range(SERIES):
                row = _bulk.series_create(conn, metric, f'{{"host":"h{i}"}}')
                firsts.setdefault(name, (metric, row))
        if layout == "grouped":
            # Each metric's points loaded on their own: a delete touches only its own pages.
            for name, count in big:
                metric, first = firsts[name]
                step = span_us // count
                for lo, hi in ((0, count // 2), (count // 2, count)):
                    params = {"metric": metric, "first_series": first, "series": SERIES}
                    params |= {"start": start, "step": step, "lo": lo, "hi": hi}
                    jobs.append((_bulk.LOAD_SQL, params))
        else:
            # As ingestion lays them out: every metric's points side by side on the same pages.
            count = points - 2 * metrics
            params = {"every": round(count / delete_points), "series": SERIES, "start": start}
            params |= {"step": span_us // count}
            for key, (name, _) in zip("abc", big, strict=True):
                params[key], params[f"{key}_series"] = firsts[name]
            for lo, hi in ((0, count // 2), (count // 2, count)):
                jobs.append((INTERLEAVED_SQL, {**params, "lo": lo, "hi": hi}))
        middle = (start + (end - start) / 2).replace(second=0, microsecond=0)
        halves = [{"lo": start - timedelta(days=1), "hi": middle}]
        halves.append({"lo": middle, "hi": end + timedelta(days=1)})
        _bulk.points_and_rollups_finish(conn, url, jobs, halves=halves)


def refs_of(url: str, name: str) -> tuple[int, list[int]]:
    """The id of metric `name` and its series' ids (-1 and none if it does not exist)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        found = conn.execute("SELECT id FROM metrics WHERE name = %s", [name]).fetchone()
        metric_id = found[0] if found else -1
        series = [
            r[0] for r in conn.execute("SELECT id FROM series WHERE metric_id = %s", [metric_id])
        ]
    return metric_id, series


def rows_of(url: str, refs: tuple[int, list[int]]) -> dict[str, int]:
    """Rows of a metric in every table, by its id and its series' ids (as `refs_of` read them
    before the delete: after it, only the purge's rows still carry them)."""
    import psycopg

    metric_id, series = refs
    with psycopg.connect(url, autocommit=True) as conn:
        out = {
            "metrics": conn.execute(
                "SELECT count(*) FROM metrics WHERE id = %s", [metric_id]
            ).fetchone()[0],
            "series": conn.execute(
                "SELECT count(*) FROM series WHERE id = ANY(%s)", [series]
            ).fetchone()[0],
        }
        out["metric_points"] = conn.execute(
            "SELECT count(*) FROM metric_points WHERE metric_id = %s", [metric_id]
        ).fetchone()[0]
        for table in TABLES[1:]:
            out[table] = conn.execute(
                f"SELECT count(*) FROM {table} WHERE series_id = ANY(%s)",
                [series],
            ).fetchone()[0]
        return out


def total_points(url: str) -> int:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute("SELECT count(*) FROM metric_points").fetchone()[0]


# Runs storage.metric_and_series_delete itself in the service's environment and prints how long
# each of its statements took: where the time of a delete goes.
DIRECT_DELETE = """
import json, time
from django.db import connection
from django.utils import timezone
from metrics import storage
from metrics.models import Metric

timings = []

def timed(execute, sql, params, many, context):
    started = time.perf_counter()
    try:
        return execute(sql, params, many, context)
    finally:
        timings.append([" ".join(sql.split())[:60], (time.perf_counter() - started) * 1000])

metric_id = Metric.objects.get(name=%r).id
with connection.cursor() as cursor:
    if %r != "default":
        cursor.execute("SET wal_compression = " + %r)
    cursor.execute("SELECT pg_current_wal_lsn()")
    lsn = cursor.fetchone()[0]
started = time.perf_counter()
with connection.execute_wrapper(timed):
    purge_id = storage.metric_and_series_delete(metric_id, now=timezone.now())
    timings.append(["(the metric is hidden: what DELETE answers after)", 0.0])
    storage.metric_rows_purge(purge_id)
total = (time.perf_counter() - started) * 1000
with connection.cursor() as cursor:
    cursor.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %%s)", [lsn])
    wal = int(cursor.fetchone()[0])
print(json.dumps({"total_ms": total, "wal_bytes": wal, "statements": timings}))
"""


# Runs the pending purges as a worker would, after the DELETE over HTTP; prints how long it took.
PURGE_PENDING = """
import json, time
from metrics import storage
from metrics.models import MetricPurge

started = time.perf_counter()
done = [storage.metric_rows_purge(p) for p in MetricPurge.objects.values_list("pk", flat=True)]
print(json.dumps({"purges": sum(done), "total_ms": (time.perf_counter() - started) * 1000}))
"""


def purge_pending(env) -> dict:
    out = _common.manage(env, "shell", "-c", PURGE_PENDING)
    return json.loads(out.strip().splitlines()[-1])


def checkpoint(url: str) -> None:
    """Each delete starts right after a checkpoint: every page it changes is written whole
    to the WAL once (full_page_writes), the cost of deleting old, untouched data."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CHECKPOINT")


def direct_delete(env, wal_compression: str) -> dict:
    """storage.metric_and_series_delete of DELETED_DIRECT, timed per statement (no HTTP)."""
    code = DIRECT_DELETE % (DELETED_DIRECT, wal_compression, wal_compression)
    out = _common.manage(env, "shell", "-c", code)
    return json.loads(out.strip().splitlines()[-1])


def http_delete(host: str, port: int, key: str, path: str) -> tuple[float, int]:
    started = time.perf_counter()
    conn = http.client.HTTPConnection(host, port, timeout=120)
    conn.request("DELETE", path, headers={"X-API-Key": key})
    response = conn.getresponse()
    response.read()
    elapsed = time.perf_counter() - started
    conn.close()
    return elapsed, response.status


def cursor(name: str) -> str:
    """The cursor GET /api/metrics puts in `next` after `name` (metrics.discovery's format)."""
    raw = json.dumps([name], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def paths(metrics: int) -> dict[str, str]:
    deep = cursor(f"bench.m.{metrics - 150:05d}")
    return {
        "GET /api/metrics (first page, 100)": "/api/metrics?limit=100",
        f"GET /api/metrics (cursor at #{metrics - 150:,}, 100)": "/api/metrics?"
        + urlencode({"limit": 100, "cursor": deep}),
        "GET /api/metrics (first page, 1000)": "/api/metrics?limit=1000",
        "GET /api/metrics?search=m.099 (substring)": "/api/metrics?search=m.099",
        "GET /api/metrics?prefix=bench.m.05": "/api/metrics?prefix=bench.m.05",
        "GET /api/series?metric=bench.other": f"/api/series?metric={OTHER}",
        "GET /api/tags?metric=bench.other": f"/api/tags?metric={OTHER}",
        _reads.FLOOR: "/api/keys/me",
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--metrics", type=int, default=10_000)
    parser.add_argument("--points", type=int, default=10_000_000, help="all points in all")
    parser.add_argument("--delete-points", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument(
        "--layout",
        choices=("interleaved", "grouped"),
        default="interleaved",
        help="points of all metrics side by side on the pages (as ingested), or each "
        "metric's on pages of its own",
    )
    _options.read_options(parser)
    parser.add_argument(
        "--direct-wal-compression",
        choices=("default", "off", "pglz", "lz4", "zstd"),
        default="default",
        help="wal_compression of the direct delete's session (needs a superuser connection): "
        "how much of a delete is writing full pages to the WAL",
    )
    args = parser.parse_args(argv)
    if args.points < 2 * args.delete_points + 2 * args.metrics + 2 * SERIES:
        parser.error("--points must exceed twice --delete-points plus two per small metric")
    if args.metrics < 200:
        parser.error("--metrics must be at least 200 (the deep page is 150 from the end)")

    end = datetime.now(UTC).replace(microsecond=0)
    began = time.perf_counter()
    with _runners.scratch(DATABASE_NAME, key_name="bench-read") as run:
        bench_url, env, machine, reader = run.database_url, run.env, run.machine, run.key
        load(
            bench_url,
            metrics=args.metrics,
            points=args.points,
            delete_points=args.delete_points,
            days=args.days,
            end=end,
            layout=args.layout,
        )
        loaded = time.perf_counter() - began
        stored = total_points(bench_url)
        admin = _common.api_key_create(
            env, name="bench-admin", rate_limit=10_000_000, scopes="admin"
        )
        shapes = paths(args.metrics)
        refs = refs_of(bench_url, DELETED)
        before = rows_of(bench_url, refs)
        with _servers.gunicorn(env, workers=2) as (host, port):
            samples, bodies = _reads.measure_http(
                host, port, reader, shapes, requests=args.requests, warmup=args.warmup
            )
            checkpoint(bench_url)
            seconds, status = http_delete(host, port, admin, f"/api/metrics/{DELETED}")
            _, status_again = http_delete(host, port, admin, f"/api/metrics/{DELETED}")
        hidden = rows_of(bench_url, refs)
        purged = purge_pending(env)
        after = rows_of(bench_url, refs)
        direct_refs = refs_of(bench_url, DELETED_DIRECT)
        direct_before = rows_of(bench_url, direct_refs)
        checkpoint(bench_url)
        direct = direct_delete(env, args.direct_wal_compression)
        direct_after = rows_of(bench_url, direct_refs)
    if any(direct_after.values()) or not direct_before["metric_points"]:
        raise SystemExit(f"bench: the direct delete left {direct_after}")
    if status != 204 or status_again != 404:
        raise SystemExit(f"bench: DELETE answered {status}, then {status_again}")
    if (
        purged["purges"] != 1
        or hidden["metric_points"] != before["metric_points"]
        or hidden["metrics"]
        or hidden["series"]
    ):
        raise SystemExit(f"bench: the DELETE left {hidden}, then {purged['purges']} purges ran")
    report(args, machine, loaded, stored, shapes, samples, bodies, seconds, before, after)
    print(
        f"its purge, as a worker runs it after the answer: {purged['total_ms']:,.0f} ms "
        "(the rows above are counted after it)"
    )
    print()
    print(
        f"storage.metric_and_series_delete + metric_rows_purge({DELETED_DIRECT}), no HTTP: "
        f"{direct['total_ms']:,.0f} ms, "
        f"{direct['wal_bytes'] / 2**20:,.0f} MiB of WAL "
        f"(wal_compression: {args.direct_wal_compression})"
    )
    for sql, ms in direct["statements"]:
        print(f"  {ms:>8,.1f} ms  {sql}")
    return 0


def report(args, machine, loaded, stored, shapes, samples, bodies, seconds, before, after):
    print()
    print(f"Machine: {machine}")
    print(
        f"Data: {args.metrics:,} small metrics + 2 of 10 series; {stored:,} points in all over "
        f"{args.days} days, {args.layout}; loaded with rollups in {loaded:.0f} s"
    )
    print(f"HTTP: gunicorn 2 sync workers, one sequential client, {args.requests} requests each")
    print()
    print(f"| {'request':<46} | {'rows':>5} | {'median ms':>9} | {'p95 ms':>7} |")
    print(f"| {'-' * 46} | {'-' * 5}:| {'-' * 9}:| {'-' * 7}:|")
    for label in shapes:
        body = bodies[label]
        rows = len(body.get("results", body.get("keys", {}).get("host", [1])))
        median, p95 = statistics.median(samples[label]), _common.percentile(samples[label], 95)
        print(
            f"| {label:<46} | {rows:>5} | {_reads.ms_text(median):>9} | {_reads.ms_text(p95):>7} |"
        )
    print()
    print(
        f"DELETE /api/metrics/{DELETED}: {seconds * 1000:,.0f} ms (one run, end to end, the "
        "answer), removed:"
    )
    for table, count in before.items():
        print(f"  {table:<22} {count:>10,} -> {after[table]:,}")
    first, deep = list(shapes)[:2]
    ratio = statistics.median(samples[deep]) / statistics.median(samples[first])
    checks = [
        (f"DELETE ≤ {TARGET_DELETE_S:.0f} s", f"{seconds:.2f} s", seconds <= TARGET_DELETE_S),
        (
            f"deep page / first page ≤ {TARGET_DEPTH_RATIO}x",
            f"{ratio:.2f}x",
            ratio <= TARGET_DEPTH_RATIO,
        ),
        ("no row left behind", str(sum(after.values())), not any(after.values())),
    ]
    print()
    for name, value, passed in checks:
        print(f"{'PASS' if passed else 'FAIL'}  {name}: {value}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
