"""The data and panels of `make bench-promql`: 500 series (20 metrics of 25 tag sets) whose every
sample is a formula of (series, index), so that the service (bulk-loaded in SQL) and Prometheus
(backfilled from OpenMetrics written here) hold exactly the same samples.

Two copies of the shapes: `s_*` over the last hours at a short scrape interval, for the 6-hour
panels, and `l_*` over the last days at a longer one, for the 30-day panels. Counters go to the
service as increments and to Prometheus as their running totals.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

INSTANCES = [f"10.0.0.{n}:9100" for n in range(1, 6)]
PATHS = ["/", "/api", "/login", "/search", "/static"]
LE = ["0.05", "0.1", "0.25", "0.5", "+Inf"]

# (name, kind, label sets): every metric has 25 series.
GRID = [{"instance": i, "path": p} for i in INSTANCES for p in PATHS]
METRICS: list[tuple[str, str, list[dict[str, str]]]] = [
    ("http_requests_total", "counter", GRID),
    ("http_errors_total", "counter", GRID),
    ("jobs_done_total", "counter", GRID),
    ("bytes_sent_total", "counter", GRID),
    ("cache_misses_total", "counter", GRID),
    (
        "request_duration_seconds_bucket",
        "counter",
        [{"instance": i, "le": le} for i in INSTANCES for le in LE],
    ),
    ("request_duration_seconds_count", "counter", GRID),
    ("request_duration_seconds_sum", "counter", GRID),
    ("logins_total", "counter", GRID),
    ("queue_pushes_total", "counter", GRID),
    ("memory_bytes", "gauge", GRID),
    ("cpu_usage_ratio", "gauge", GRID),
    ("queue_depth", "gauge", GRID),
    ("temperature_celsius", "gauge", GRID),
    ("open_connections", "gauge", GRID),
    ("disk_free_bytes", "gauge", GRID),
    ("threads", "gauge", GRID),
    ("heap_used_bytes", "gauge", GRID),
    ("goroutines", "gauge", GRID),
    ("uptime_seconds", "gauge", GRID),
]


@dataclass(frozen=True)
class Series:
    number: int  # 0..499, the k of the formulas
    name: str
    kind: str
    labels: dict[str, str]


def series_all() -> list[Series]:
    out = []
    for name, kind, label_sets in METRICS:
        for labels in label_sets:
            out.append(Series(len(out), name, kind, labels))
    return out


# The formulas, written twice: here for Prometheus, in SQL_* for the service. Integers only
# (a gauge is a whole number of halves), so both sides hold the same floats exactly.
def phase_ms(k: int, interval_ms: int) -> int:
    """Each series' scrape offset within the interval: never on a whole second."""
    return 137 + (k * 7919) % (interval_ms - 1000)


def increment(k: int, i: int, series: Series) -> int:
    base = (k * 37 + i * 11) % 9
    if series.name == "request_duration_seconds_bucket":
        return min(LE.index(series.labels["le"]) + 1, base)  # cumulative in `le`
    return base


# increment() depends on i only through i * 11 % 9, so it repeats every 9 samples.
PERIOD = 9


def increments_before(k: int, count: int, series: Series) -> int:
    """The sum of a counter's first `count` increments, in closed form (by the period)."""
    whole, rest = divmod(count, PERIOD)
    cycle = sum(increment(k, i, series) for i in range(PERIOD))
    return whole * cycle + sum(increment(k, i, series) for i in range(rest))


def gauge(k: int, i: int) -> float:
    return ((k * 131 + i * 17) % 1000) * 0.5


SQL_PHASE = "(137 + (%(k)s * 7919) %% (%(interval)s - 1000))"
SQL_GAUGE = "(((%(k)s * 131 + i * 17) %% 1000) * 0.5)::float8"
SQL_INCREMENT = "(((%(k)s * 37 + i * 11) %% 9))::float8"
SQL_BUCKET_INCREMENT = "(least(%(le)s, (%(k)s * 37 + i * 11) %% 9))::float8"


def openmetrics_write(
    path: Path, copies: list[tuple[str, int, int, int]], *, since_ms: int, until_ms: int
) -> int:
    """The samples of each copy (prefix, start_ms, count, interval_ms) with times in
    `[since_ms, until_ms)` as OpenMetrics text; returns how many."""
    written = 0
    with path.open("w") as out:
        for prefix, start_ms, count, interval_ms in copies:
            for series in series_all():
                k = series.number
                labels = ",".join(
                    f'{key}="{value}"' for key, value in sorted(series.labels.items())
                )
                head = f"{prefix}{series.name}{{{labels}}} "
                first = start_ms + phase_ms(k, interval_ms)
                lo = max(0, -(-(since_ms - first) // interval_ms))
                hi = min(count, -(-(until_ms - first) // interval_ms))
                if lo >= hi:
                    continue
                total = (
                    sum(increment(k, i, series) for i in range(lo))
                    if series.kind == "counter"
                    else 0
                )
                lines = []
                for i in range(lo, hi):
                    ms = first + i * interval_ms
                    if series.kind == "counter":
                        total += increment(k, i, series)
                        value = total
                    else:
                        value = gauge(k, i)
                    lines.append(f"{head}{value!r} {ms // 1000}.{ms % 1000:03d}\n")
                out.writelines(lines)
                written += hi - lo
        out.write("# EOF\n")
    return written


def panels(prefix: str, window: str) -> dict[str, str]:
    """Eight panels of a service dashboard, as the monitoring mixins write them."""
    p = prefix
    return {
        "requests by instance": f"sum by (instance) (rate({p}http_requests_total[{window}]))",
        "p95 latency": f"histogram_quantile(0.95, sum by (le) (rate({p}request_duration_seconds_bucket[{window}])))",
        "memory by instance": f"sum by (instance) ({p}memory_bytes)",
        "cpu by path": f"avg by (path) ({p}cpu_usage_ratio)",
        "top paths": f"topk(3, sum by (path) (rate({p}http_requests_total[{window}])))",
        "error ratio": f"sum(rate({p}http_errors_total[{window}])) / sum(rate({p}http_requests_total[{window}]))",
        "queue peak": f"max by (instance) (max_over_time({p}queue_depth[{window}]))",
        "jobs done": f"sum by (instance) (increase({p}jobs_done_total[{window}]))",
    }


def copies_iter(prefixes: list[str]) -> Iterator[tuple[str, Series]]:
    for prefix in prefixes:
        for series in series_all():
            yield prefix, series


# --- the service's copy, bulk-loaded in SQL -----------------------------------------------------


def _date(day: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(day * 86400))


def points_insert(conn, *, prefix: str, start_ms: int, count: int, interval_ms: int) -> None:
    """The 20 metrics (named with `prefix`), their 500 series and `count` points per series
    from `start_ms`, one every `interval_ms`, by generate_series (SQL_* above): the samples
    openmetrics_write gives Prometheus, counters as increments."""
    from metrics.storage import canonical_tags, tags_hash

    first = _date(start_ms // 86_400_000)
    last = _date((start_ms + count * interval_ms) // 86_400_000)  # inclusive: the last point's day
    for table in ("metric_points", "metric_rollup_minute"):
        conn.execute(
            "SELECT gf_ensure_day_partitions(%s, %s::date, %s::date)", [table, first, last]
        )
    metric_ids: dict[str, int] = {}
    for name, kind, _ in METRICS:
        metric_ids[name] = conn.execute(
            "INSERT INTO metrics (name, type, created_at) VALUES (%s, %s, now()) RETURNING id",
            [prefix + name, "counter" if kind == "counter" else "value"],
        ).fetchone()[0]
    for series in series_all():
        series_id = conn.execute(
            "INSERT INTO series (metric_id, tags, tags_hash, created_at) "
            "VALUES (%s, %s::jsonb, %s, now()) RETURNING id",
            [metric_ids[series.name], canonical_tags(series.labels), tags_hash(series.labels)],
        ).fetchone()[0]
        if series.kind == "gauge":
            value = SQL_GAUGE
        elif series.name == "request_duration_seconds_bucket":
            value = SQL_BUCKET_INCREMENT
        else:
            value = SQL_INCREMENT
        conn.execute(
            f"""
            INSERT INTO metric_points (metric_id, series_id, value, recorded_at)
            SELECT %(metric)s, %(series)s, {value},
                   to_timestamp((%(start)s + {SQL_PHASE} + i * %(interval)s) / 1000.0)
            FROM generate_series(0::bigint, %(count)s::bigint - 1) AS i
            """,
            {
                "metric": metric_ids[series.name],
                "series": series_id,
                "k": series.number,
                "le": LE.index(series.labels["le"]) + 1 if "le" in series.labels else 0,
                "start": start_ms,
                "interval": interval_ms,
                "count": count,
            },
        )


ROLLUP_SQL = """
INSERT INTO {table} (series_id, bucket, count, sum, min, max{latest_columns})
SELECT series_id, date_bin('{width}', recorded_at, timestamptz 'epoch'), count(*),
       sum(value{sum_order}), min(value), max(value){latest_values}
FROM metric_points GROUP BY 1, 2
"""


def rollups_build(conn, *, sums_in_time_order: bool = False) -> None:
    """The four rollup levels as the write path keeps them: the coarser three with each
    bucket's latest point (metrics migration 0013), the minute one without. With
    `sums_in_time_order`, each sum adds its points in time order, as a write path that receives
    them in order does (what the compaction's check compares, to the bit); else in any order."""
    for table, width, latest in (
        ("metric_rollup_minute", "1 minute", False),
        ("metric_rollup_15m", "15 minutes", True),
        ("metric_rollup_hour", "1 hour", True),
        ("metric_rollup_day", "1 day", True),
    ):
        conn.execute(
            ROLLUP_SQL.format(
                table=table,
                width=width,
                sum_order=" ORDER BY recorded_at" if sums_in_time_order else "",
                latest_columns=", last, last_at" if latest else "",
                latest_values=(
                    ", (array_agg(value ORDER BY recorded_at DESC))[1], max(recorded_at)"
                    if latest
                    else ""
                ),
            )
        )
