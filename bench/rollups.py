"""What each rollup level costs the write path: `points_ingest` with and without one level.

    make bench-rollups                        # or, with DATABASE_URL and REDIS_URL set:
    python -m bench.rollups --rounds 15

Writes the batches of `bench/ingest.py` (bench/_loads.py: 1000 points, 200 series, timestamps over
the last 5 s) and single points (one known series), in one process, through `metrics.services.points_ingest`,
alternating round by round between the write path as it is (minute, 15-minute, hour and day
rollups in one statement) and the same path without the 15-minute level
(`metrics.storage.ROLLUP_TABLES` minus `metric_rollup_15m`). Alternating, rather than one run
after the other, keeps a shared machine's changing load out of the comparison. Prints the
median time per batch and per single point of each, and their ratio.

Everything runs in a database of its own (gf_bench_rollups, dropped at exit) on the server named
by DATABASE_URL.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from bench import _common, _runners
from bench._loads import BODIES_PER_CLIENT, batch_points

DATABASE_NAME = "gf_bench_rollups"
SINGLES_PER_ROUND = 200


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15, help="rounds of each variant")
    parser.add_argument("--batches", type=int, default=16, help="1000-point batches per round")
    args = parser.parse_args()

    with _runners.django_scratch(DATABASE_NAME) as scratch_url:
        from datetime import UTC, datetime

        from metrics import storage
        from metrics.services import PointInput, points_ingest

        every_level = storage.ROLLUP_TABLES
        without_15m = tuple(t for t in every_level if t[0] != "metric_rollup_15m")
        variants = {"every level": every_level, "without 15 min": without_15m}
        per_batch: dict[str, list[float]] = {name: [] for name in variants}
        per_single: dict[str, list[float]] = {name: [] for name in variants}

        def batches() -> list[list[PointInput]]:
            now = time.time()
            return [
                [
                    PointInput(
                        p["type"],
                        p["name"],
                        float(p["value"]),
                        datetime.fromtimestamp(p["timestamp"], UTC),
                        p["tags"],
                    )
                    for p in batch_points(0, v, now)
                ]
                for v in range(BODIES_PER_CLIENT)
            ]

        # Metrics, series and partitions exist and are cached before anything is timed.
        for body in batches():
            points_ingest(points=body)
        points_ingest(points=[PointInput("counter", "bench.single", 1.0, datetime.now(UTC))])
        for n in range(2 * args.rounds):
            name = list(variants)[n % 2]
            storage.ROLLUP_TABLES = variants[name]
            bodies = batches()
            started = time.perf_counter()
            for i in range(args.batches):
                points_ingest(points=bodies[i % len(bodies)])
            per_batch[name].append((time.perf_counter() - started) * 1000 / args.batches)
            started = time.perf_counter()
            for _ in range(SINGLES_PER_ROUND):
                points_ingest(
                    points=[PointInput("counter", "bench.single", 1.0, datetime.now(UTC))]
                )
            per_single[name].append((time.perf_counter() - started) * 1000 / SINGLES_PER_ROUND)
        storage.ROLLUP_TABLES = every_level

        print(f"machine: {_common.machine_summary(scratch_url)}")
        print(
            f"median of {args.rounds} alternating rounds per variant; {args.batches} batches of"
            f" 1000 points and {SINGLES_PER_ROUND} single points per round"
        )
        batch = {name: statistics.median(v) for name, v in per_batch.items()}
        single = {name: statistics.median(v) for name, v in per_single.items()}
        for name in variants:
            print(
                f"{name:<16} {batch[name]:7.2f} ms per 1000-point batch"
                f"  {single[name]:6.3f} ms per single point"
            )
        print(
            f"every level / without 15 min: batch {batch['every level'] / batch['without 15 min']:.3f}x,"
            f" single point {single['every level'] / single['without 15 min']:.3f}x"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
