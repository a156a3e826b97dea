"""make bench-promql: a dashboard of eight typical panels over 500 series, asked of the service
and of Debian's prometheus holding exactly the same samples, in one run on one machine.

Two views of the dashboard:
- the last 6 hours at steps of 15, 30 and 60 s (5-minute windows), over series scraped every
  15 s: the service must answer within 2x Prometheus's p95;
- the last 30 days at a step of 1 hour (1-hour windows), over series scraped every 60 s: the
  service must be faster than Prometheus, which decodes every raw chunk where the service reads
  hour rollups.

The service's copy is bulk-loaded in SQL (points and rollups, as the write path keeps them:
see bench/_dashboard.py), Prometheus's backfilled with promtool. Each panel is asked
round-robin, by POST /api/v1/query_range from one client, of both, timed from the request to
the answer's last byte; the figures are p50 and p95 per panel and their ratio (service /
Prometheus). Usage:
    make bench-promql [ARGS="--days 30 --requests 40 --warmups 3"]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

from bench import _common, _dashboard, _runners, _servers
from tests.promql.reference import Reference, binaries, blocks_build, reference_serve

SHORT_PREFIX, LONG_PREFIX = "s_", "l_"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--hours", type=float, default=6, help="the short view's span (6)")
    parser.add_argument("--days", type=float, default=30, help="the long view's span (30)")
    parser.add_argument("--short-interval", type=int, default=15, help="s between samples (15)")
    parser.add_argument("--long-interval", type=int, default=60, help="s between samples (60)")
    parser.add_argument("--requests", type=int, default=40, help="timed requests per panel (40)")
    parser.add_argument(
        "--warmups", type=int, default=3, help="untimed rounds of every panel first (3)"
    )
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (2)")
    args = parser.parse_args()
    if binaries() is None:
        raise SystemExit("bench: prometheus and promtool are needed (apt-get install prometheus)")

    now_ms = int(time.time()) // 3600 * 3600 * 1000
    short_count = int(args.hours * 3600 // args.short_interval)
    long_count = int(args.days * 86400 // args.long_interval)
    short_start = now_ms - short_count * args.short_interval * 1000
    long_start = now_ms - long_count * args.long_interval * 1000
    copies = [
        (SHORT_PREFIX, short_start, short_count, args.short_interval * 1000),
        (LONG_PREFIX, long_start, long_count, args.long_interval * 1000),
    ]
    samples = 500 * (short_count + long_count)
    _common.log(f"{samples:,} samples: {short_count} and {long_count} per series")

    with (
        _runners.scratch("gf_bench_promql", key_name="bench-promql") as run,
        tempfile.TemporaryDirectory(prefix="bench-promql-") as tmp,
    ):
        workdir = Path(tmp)
        _runners_timed("service loaded", lambda: service_load(run, copies))
        reference = _runners_timed("prometheus loaded", lambda: prometheus_start(workdir, copies))
        try:
            with _servers.gunicorn(run.env, workers=args.workers) as (host, port):
                ours = (f"http://{host}:{port}", {"X-API-Key": run.key})
                theirs = (reference.url, {})
                views = [
                    (
                        f"6 h, step {step} s",
                        _dashboard.panels(SHORT_PREFIX, "5m"),
                        now_ms - int(args.hours * 3600_000),
                        now_ms,
                        step,
                    )
                    for step in (15, 30, 60)
                ]
                views.append(
                    (
                        "30 d, step 1 h",
                        _dashboard.panels(LONG_PREFIX, "1h"),
                        long_start + 3600_000,
                        now_ms,
                        3600,
                    )
                )
                print(run.machine)
                print(f"samples: {samples:,} (500 series); requests per panel: {args.requests}")
                for title, panels, start, end, step in views:
                    view_run(
                        title,
                        panels,
                        start / 1000,
                        end / 1000,
                        step,
                        ours,
                        theirs,
                        args.requests,
                        args.warmups,
                    )
        finally:
            reference.stop()


def _runners_timed(label: str, action):
    started = time.perf_counter()
    result = action()
    _common.log(f"{label} in {time.perf_counter() - started:.1f} s")
    return result


def service_load(run: _runners.Scratch, copies: list[tuple[str, int, int, int]]) -> None:
    """Metrics and series rows, the points by generate_series, then the rollups from them."""
    import psycopg

    os.environ.update(run.env)
    import django

    django.setup()

    with psycopg.connect(run.database_url, autocommit=True) as conn:
        conn.execute("SET TIME ZONE 'UTC'")
        for prefix, start_ms, count, interval_ms in copies:
            _dashboard.points_insert(
                conn, prefix=prefix, start_ms=start_ms, count=count, interval_ms=interval_ms
            )
        _dashboard.rollups_build(conn)
        conn.execute("VACUUM ANALYZE")


# Prometheus's own block width: promtool reads its whole input once per block, so the samples
# are written one file per block, and two files are turned into blocks at a time.
BLOCK_MS = 2 * 3600_000


def prometheus_start(workdir: Path, copies: list[tuple[str, int, int, int]]) -> Reference:
    """The same samples as OpenMetrics, backfilled into blocks by promtool, served by prometheus."""
    from concurrent.futures import ThreadPoolExecutor

    datadir = workdir / "data"
    first = min(start for _, start, _, _ in copies) // BLOCK_MS * BLOCK_MS
    last = max(start + count * interval for _, start, count, interval in copies)
    windows = list(range(first, last + BLOCK_MS, BLOCK_MS))

    def block(since: int) -> int:
        source = workdir / f"block-{since}.om"
        written = _dashboard.openmetrics_write(
            source, copies, since_ms=since, until_ms=since + BLOCK_MS
        )
        if written:
            blocks_build(source, datadir, timeout=600)
        source.unlink()
        return written

    with ThreadPoolExecutor(2) as pool:
        samples = sum(pool.map(block, windows))
    return reference_serve(datadir, workdir, samples=samples, start_seconds=600)


def query_range(
    endpoint: tuple[str, dict], query: str, start: float, end: float, step: int
) -> tuple[float, int]:
    """One POST /api/v1/query_range: (milliseconds, series in the answer)."""
    url, headers = endpoint
    body = urllib.parse.urlencode(
        {"query": query, "start": start, "end": end, "step": step}
    ).encode()
    request = urllib.request.Request(  # noqa: S310 - loopback
        f"{url}/api/v1/query_range",
        data=body,
        headers={**headers, "Content-Type": "application/x-www-form-urlencoded"},
        method="POST",
    )
    # Timed: from sending the request to the last byte of the answer. The client's own work
    # after that (decoding the JSON, slower in Python than in Grafana's Go) and its garbage
    # collector's pauses are no part of either server's time.
    collecting = gc.isenabled()
    gc.disable()
    try:
        started = time.perf_counter()
        with urllib.request.urlopen(request, timeout=300) as answer:  # noqa: S310
            body = answer.read()
        elapsed = (time.perf_counter() - started) * 1000
    finally:
        if collecting:
            gc.enable()
    data = json.loads(body)
    if data.get("status") != "success":
        raise SystemExit(f"bench: {query}: {data}")
    return elapsed, len(data["data"]["result"])


def view_run(title, panels, start, end, step, ours, theirs, requests: int, warmups: int) -> None:
    """Each panel `requests` times on both, round-robin after `warmups` untimed rounds; prints
    p50/p95. A round of warm-ups reaches one gunicorn worker: several reach every worker, as a
    dashboard refreshed all day does (each keeps its own recent hours, promql/hours.py)."""
    timings: dict[tuple[str, str], list[float]] = {}
    sizes: dict[tuple[str, str], int] = {}
    for _ in range(max(warmups, 1)):
        for side, endpoint in (("service", ours), ("prometheus", theirs)):
            for label, query in panels.items():
                _, sizes[side, label] = query_range(endpoint, query, start, end, step)
    for _ in range(requests):
        for label, query in panels.items():
            for side, endpoint in (("service", ours), ("prometheus", theirs)):
                elapsed, _ = query_range(endpoint, query, start, end, step)
                timings.setdefault((side, label), []).append(elapsed)
    print(f"\n{title}")
    print(
        f"{'panel':<22} {'series':>6}  {'service p50/p95 ms':>20}  {'prometheus p50/p95 ms':>22}  {'p95 ratio':>9}"
    )
    ratios = []
    for label in panels:
        ours_ms, theirs_ms = timings["service", label], timings["prometheus", label]
        p95_ours, p95_theirs = (
            _common.percentile(ours_ms, 95),
            _common.percentile(theirs_ms, 95),
        )
        ratio = p95_ours / p95_theirs
        ratios.append(ratio)
        if sizes["service", label] != sizes["prometheus", label]:
            label += " (!)"  # the answers differ in size: a wrong answer is no figure
        print(
            f"{label:<22} {sizes['service', label.rstrip(' (!)')]:>6}  "
            f"{statistics.median(ours_ms):>9.1f}/{p95_ours:<9.1f}  "
            f"{statistics.median(theirs_ms):>10.1f}/{p95_theirs:<10.1f}  {ratio:>8.2f}x"
        )
    print(f"{'median ratio':<22} {'':>6}  {'':>20}  {'':>22}  {statistics.median(ratios):>8.2f}x")
    print(f"{'worst ratio':<22} {'':>6}  {'':>20}  {'':>22}  {max(ratios):>8.2f}x")


if __name__ == "__main__":
    main()
