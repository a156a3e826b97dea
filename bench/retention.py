"""Expiring one day of points: dropping its partition against deleting its rows.

    make bench-retention                          # or, with DATABASE_URL and REDIS_URL set:
    python -m bench.retention --points 1000000 --rounds 3

Each round loads --points points into each of three past days (same shape as the service writes:
100 series, timestamps spread over the day, both indexes, vacuumed as autovacuum would have
long done for a day that old), then expires them the two ways
`retention.services.retention_apply` does, through the same functions it calls:

  (1) drop: `retention.storage.partition_drop`, which locks the partition, counts its rows
      exactly (count(*), also timed alone), takes the parent's ACCESS EXCLUSIVE lock only to
      detach it (that hold is timed by the function and printed) and drops it after; meanwhile
      a probe on its own connection inserts one point into today's partition every 5 ms and
      the longest of those inserts is printed too;
  (2) delete: `retention.storage.rows_delete` on the other day (the path of the one partition
      that straddles the cutoff), then VACUUM of that partition, timed separately;
  (3) the whole service: `retention_apply` over a third loaded day (drop + ensure + all rules).

Figures are medians over --rounds. Everything runs in a database of its own
(gf_bench_retention, dropped at exit) on the server named by DATABASE_URL.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import threading
import time
from datetime import UTC, date, datetime, timedelta

from bench import _common, _runners

DATABASE_NAME = "gf_bench_retention"
SERIES = 100


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000


def _load(cursor, day: date, points: int) -> None:
    """Fill the day's partition server-side (the loading is not what is measured)."""
    cursor.execute("SELECT gf_ensure_day_partitions('metric_points', %s, %s)", [day, day])
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    step_us = 86_400_000_000 // points
    cursor.execute(
        """
        INSERT INTO metric_points (metric_id, series_id, value, recorded_at)
        SELECT 1 + g %% 10, 1 + g %% %s, random(), %s + g * make_interval(secs => %s / 1e6)
        FROM generate_series(0, %s - 1) AS g
        """,
        [SERIES, start, step_us, points],
    )
    # A day old enough to expire has long been vacuumed by autovacuum (PostgreSQL 13+ vacuums
    # insert-only tables too), which lets count(*) read the visibility map; do the same here.
    cursor.execute(f"VACUUM (ANALYZE) metric_points_{day:%Y%m%d}")


class _Probe:
    """Insert one point into today's partition every 5 ms on its own connection; keep the
    longest insert. What a writer of the live service would wait behind the drop."""

    def __init__(self, url: str) -> None:
        import psycopg

        self._conn = psycopg.connect(url, autocommit=True)
        self._stop = threading.Event()
        self.longest_ms = 0.0
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.perf_counter()
            self._conn.execute(
                "INSERT INTO metric_points (metric_id, series_id, value, recorded_at)"
                " VALUES (1, 1, 1.0, now())"
            )
            self.longest_ms = max(self.longest_ms, _ms(started))
            self._stop.wait(0.005)

    def __enter__(self) -> _Probe:
        self._thread.start()
        time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(0.05)
        self._stop.set()
        self._thread.join()
        self._conn.close()


def _size_mb(cursor, day: date) -> float:
    cursor.execute("SELECT pg_total_relation_size(%s)", [f"metric_points_{day:%Y%m%d}"])
    return cursor.fetchone()[0] / 2**20


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=1_000_000, help="points per day")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    with _runners.django_scratch(DATABASE_NAME) as scratch_url:
        # The service's JSON line per run would interleave with the figures.
        logging.getLogger("retention").setLevel(logging.WARNING)
        from django.conf import settings
        from django.db import connection

        from retention import storage
        from retention.services import retention_apply

        figures: dict[str, list[float]] = {
            "count": [], "drop": [], "parent_lock": [], "probe": [], "delete": [], "vacuum": [],
            "service": [],
        }  # fmt: skip
        sizes: list[float] = []
        today = datetime.now(UTC).date()
        with connection.cursor() as cursor:
            cursor.execute("SET statement_timeout = 0")
            for n in range(args.rounds):
                # Newest first: the DELETE below (recorded_at < end of its day) then finds only
                # its own day, as the straddling DELETE of a run finds only the straddling day.
                by_service, deleted, dropped = (
                    today - timedelta(days=settings.RETENTION_DAYS + 10 + 3 * n + k)
                    for k in range(3)
                )
                for day in (dropped, deleted, by_service):
                    _load(cursor, day, args.points)
                sizes.append(_size_mb(cursor, dropped))
                dropped_name = f"metric_points_{dropped:%Y%m%d}"

                started = time.perf_counter()
                cursor.execute(f"SELECT count(*) FROM {dropped_name}")
                cursor.fetchone()
                figures["count"].append(_ms(started))

                with _Probe(scratch_url) as probe:
                    started = time.perf_counter()
                    result = storage.partition_drop("metric_points", dropped_name)
                    figures["drop"].append(_ms(started))
                assert result is not None and result.rows == args.points, result
                figures["parent_lock"].append(result.parent_lock_ms)
                figures["probe"].append(probe.longest_ms)

                end = datetime(deleted.year, deleted.month, deleted.day, tzinfo=UTC) + timedelta(1)
                started = time.perf_counter()
                rows = storage.rows_delete("metric_points", "recorded_at < %s", [end])
                figures["delete"].append(_ms(started))
                assert rows == args.points, rows

                started = time.perf_counter()
                cursor.execute(f"VACUUM metric_points_{deleted:%Y%m%d}")
                figures["vacuum"].append(_ms(started))
                cursor.execute(f"DROP TABLE metric_points_{deleted:%Y%m%d}")

                started = time.perf_counter()
                counts = retention_apply(now=datetime.now(UTC))
                figures["service"].append(_ms(started))
                assert counts["metric_points"] == args.points, counts
                _common.log(f"round {n + 1}/{args.rounds} done")

        median = {name: statistics.median(values) for name, values in figures.items()}
        print(f"machine: {_common.machine_summary(scratch_url)}")
        print(
            f"{args.points:,} points per day, {statistics.median(sizes):.0f} MiB per day "
            f"(table + indexes); median of {args.rounds} rounds"
        )
        print(f"drop partition (count + DETACH + DROP):      {median['drop']:9.1f} ms")
        print(f"  of which count(*) alone, about:            {median['count']:9.1f} ms")
        print(f"  parent ACCESS EXCLUSIVE lock held:         {median['parent_lock']:9.1f} ms")
        print(f"  longest one-point INSERT meanwhile:        {median['probe']:9.1f} ms")
        print(f"DELETE the day's rows:                       {median['delete']:9.1f} ms")
        print(f"VACUUM after the DELETE:                     {median['vacuum']:9.1f} ms")
        print(f"retention_apply, one expired day:            {median['service']:9.1f} ms")
        print(
            f"DELETE + VACUUM / drop:                      {(median['delete'] + median['vacuum']) / median['drop']:9.0f}x"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
