"""make bench-storage: bytes on disk per point before and after a closed day is compacted, beside
Debian's prometheus TSDB holding the same samples; compaction throughput; query latency over the
compacted day against the same over raw points; the candidate codecs on the same rows.

The data: the 500 series of bench/_dashboard.py (20 metrics x 25 tag sets), one point every 10 s
for 8 hours (1.44 million points) on a day closed for writes, bulk-loaded in SQL with their
rollups, then VACUUM ANALYZE (so "before" has no dead row versions: the write path's upserts
leave more until autovacuum runs). Usage:
    make bench-storage [ARGS="--hours 8 --requests 15"]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from bench import _common, _dashboard, _runners, _storage
from tests.promql.reference import binaries

INTERVAL_MS = 10_000


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--hours", type=float, default=8, help="hours of points per series (8)")
    parser.add_argument("--requests", type=int, default=15, help="timed requests per query (15)")
    args = parser.parse_args()
    count = int(args.hours * 3600_000 // INTERVAL_MS)
    now = datetime.now(UTC)
    day = (now - timedelta(days=12)).replace(hour=0, minute=0, second=0, microsecond=0)
    start_ms = int(day.timestamp() * 1000) + 8 * 3600_000

    with _runners.django_scratch("gf_bench_storage") as url:
        import psycopg

        from metrics.compaction import points_compact

        with psycopg.connect(url, autocommit=True) as conn:
            started = time.perf_counter()
            points = _storage.load(conn, start_ms=start_ms, count=count, interval_ms=INTERVAL_MS)
            conn.execute("VACUUM ANALYZE")
            _common.log(f"{points:,} points loaded in {time.perf_counter() - started:.1f} s")
            before = _storage.sizes(conn)
            latency_before, answers_before = queries(day, args.requests)

            started = time.perf_counter()
            result = points_compact(now=now)
            seconds = time.perf_counter() - started
            assert result.points == points, (result.points, points)
            conn.execute("VACUUM ANALYZE")
            after = _storage.sizes(conn)
            latency_after, answers_after = queries(day, args.requests)
            assert answers_after == answers_before, "an answer changed"
            codecs = _storage.codec_bytes(conn)
            machine = _common.machine_summary(url)
        prometheus = prometheus_bytes(start_ms, count)

    print(machine)
    print(f"points: {points:,} (500 series, every {INTERVAL_MS // 1000} s for {args.hours:g} h)")
    print("\nbytes per point           before    after   ratio")
    rows = (
        ("raw points", before["raw"], after["compact"]),
        ("minute rollups", before["minute"], after["minute"]),
        ("15m/hour/day rollups", before["rollups"], after["rollups"]),
        (
            "all",
            before["raw"] + before["minute"] + before["rollups"],
            after["compact"] + after["minute"] + after["rollups"],
        ),
    )
    for label, b, a in rows:
        ratio = f"{b / a:7.1f}x" if a else "      -"
        print(f"  {label:<22} {b / points:8.2f} {a / points:8.2f} {ratio}")
    if prometheus is not None:
        print(f"  {'prometheus 2.42 TSDB':<22} {'':>8} {prometheus / points:8.2f}")
    print(
        f"\ncompaction: {points:,} points in {seconds:.2f} s = {points / seconds:,.0f} points/s"
        " (one PostgreSQL backend: one core)"
    )
    print("\nquery latency (ms)             raw p50  p95   compacted p50  p95   p95 ratio")
    for name in latency_before:
        b, a = latency_before[name], latency_after[name]
        print(
            f"  {name:<28} {b[0]:7.1f} {b[1]:6.1f}   {a[0]:12.1f} {a[1]:6.1f}   {a[1] / b[1]:6.2f}x"
        )
    print("\ncodecs on the compacted rows (points' bytes only)")
    for label, size in sorted(codecs.items(), key=lambda item: item[1]):
        print(f"  {label:<42} {size / points:6.2f} B/point")


QUERIES = (
    # (label, metric, days, interval, aggregation): the 30-day one reads hour rollups, the
    # 7-day p95 the points, the minute one the minute rollups (compacted: from the points).
    ("30 d, hourly avg", "cpu_usage_ratio", 30, "hour", "avg"),
    ("30 d, daily p95", "cpu_usage_ratio", 30, "day", "p95"),
    ("7 d, hourly p95", "memory_bytes", 7, "hour", "p95"),
    ("7 d, hourly p95 by path", "http_requests_total", 7, "hour", "p95"),
    ("1 d, minute max", "queue_depth", 1, "minute", "max"),
)


def queries(day: datetime, requests: int) -> tuple[dict[str, tuple[float, float]], list]:
    """p50 and p95 in ms of each query over the day, timed round-robin; and their answers."""
    from metrics import selectors
    from metrics.models import Metric

    end = day + timedelta(days=1)
    built = []
    for label, name, days, interval, aggregation in QUERIES:
        built.append(
            (
                label,
                selectors.SeriesQuery(
                    metric=Metric.objects.get(name=name),
                    start=end - timedelta(days=days),
                    end=end,
                    interval=interval,
                    aggregation=aggregation,
                    tz=ZoneInfo("UTC"),
                    fill="null",
                    group_by="path" if "by path" in label else None,
                ),
            )
        )
    timings: dict[str, list[float]] = {label: [] for label, _ in built}
    answers = [selectors.series_query(query=query) for _, query in built]  # warm
    for _ in range(requests):
        for label, query in built:
            started = time.perf_counter()
            selectors.series_query(query=query)
            timings[label].append((time.perf_counter() - started) * 1000)
    return {
        label: (statistics.median(t), _common.percentile(t, 95)) for label, t in timings.items()
    }, answers


def prometheus_bytes(start_ms: int, count: int) -> int | None:
    """Bytes of the TSDB blocks promtool builds from the same samples (one block for the day),
    or None without Debian's prometheus."""
    found = binaries()
    if found is None:
        _common.log("prometheus not installed: its figure is left out")
        return None
    _, promtool = found
    with tempfile.TemporaryDirectory(prefix="bench-storage-") as tmp:
        source, datadir = Path(tmp) / "samples.om", Path(tmp) / "data"
        end_ms = start_ms + count * INTERVAL_MS + INTERVAL_MS
        written = _dashboard.openmetrics_write(
            source, [("", start_ms, count, INTERVAL_MS)], since_ms=start_ms, until_ms=end_ms
        )
        _common.log(f"{written:,} samples to promtool")
        subprocess.run(
            [promtool, "tsdb", "create-blocks-from", "openmetrics", "--quiet",
             "--max-block-duration=24h", str(source), str(datadir)],
            check=True, capture_output=True, timeout=600,
        )  # fmt: skip
        total = sum(f.stat().st_size for f in datadir.rglob("*") if f.is_file())
        shutil.rmtree(datadir)
        os.remove(source)
        return total


if __name__ == "__main__":
    main()
