"""The load test: locustfile.py against gunicorn and a Celery worker, with a verdict on the target.

    make loadtest [DURATION=2m] [USERS=60] [RATE=11000] [ARGS=...]
    make loadtest-step                      # the highest write rate that keeps p95 under 200 ms
    python -m bench.loadtest --duration 2m  # with DATABASE_URL and REDIS_URL set

The service's target: 10,000 writes a minute with a p95 latency under 200 ms. A write is one
ingest request (a single counter or value, or a batch, synchronous or `Prefer: respond-async`),
whatever its number of points; the points a minute are printed beside it. Both rates are those
of the requests started within the run time, divided by the run time: the requests the stop lets
finish after it are counted in the totals, not in the rates.

The stack is the deployed one on this machine: gunicorn with deploy/gunicorn.conf.py (4 sync
workers, DEBUG off, generated secrets) on a free loopback port, a `celery worker` (prefork, 2
processes) and `celery beat` on a queue of their own, against a database of its own created next
to DATABASE_URL's (migrated, dropped at exit) and the Redis of REDIS_URL. An API key with a rate
limit of 10,000,000 a minute is created for the run.

Locust runs headless in a subprocess (it monkey-patches the process with gevent), with --users
users paced by constant_throughput so that together they offer --rate writes a minute (plus the
queries of the mix, one task in 19). Its summary is printed as it is; then the figures of the
write requests and one verdict line:

    verdict: PASS: 10,912 writes/min (target >= 10,000), p95 96 ms (target < 200 ms), 0 5xx, ...

The exit status is 0 on PASS, 1 on FAIL. A failed request of any kind (a 4xx, 5xx or a broken
connection) fails the run: the mix is valid traffic, so each one is a defect.

--step runs stages of --stage-duration each on one stack, --step-users more users per stage at
--user-rate writes a second per user, and stops at the first stage that misses p95 or the offered
rate, or fails a request; it prints the highest rate that met the latency target.
"""

from __future__ import annotations

import argparse
import sys

from bench._locust import (
    TARGET_P95_MS,
    TARGET_WRITES_PER_MINUTE,
    LoadResult,
    locust_run,
    print_figures,
)
from bench._options import duration
from bench._stack import log, machine_line, running_stack


def verdict(result: LoadResult, *, target_writes: float, target_p95_ms: float) -> tuple[bool, str]:
    p95 = result.write_percentile(95)
    checks = [
        result.writes_per_minute >= target_writes,
        p95 < target_p95_ms,
        result.server_errors == 0,
        result.failed == 0,
    ]
    ok = all(checks)
    line = (
        f"verdict: {'PASS' if ok else 'FAIL'}: {result.writes_per_minute:,.0f} writes/min "
        f"(target >= {target_writes:,.0f}), p95 {p95:.0f} ms (target < {target_p95_ms:g} ms), "
        f"{result.server_errors} 5xx (target 0), {result.failed} failed requests (target 0); "
        f"{result.points_per_minute:,.0f} points/min"
    )
    return ok, line


# --- the two modes --------------------------------------------------------------------------------


def run_once(args: argparse.Namespace) -> int:
    with running_stack("loadtest") as stack:
        log(machine_line(stack.database_url))
        log(
            f"{args.users} users offering {args.rate:,} writes/min for {args.duration} s against "
            f"{stack.base_url}"
        )
        result = locust_run(
            stack, users=args.users, writes_per_minute=args.rate, duration=args.duration
        )
        stack.check_alive()
    print_figures(result)
    ok, line = verdict(result, target_writes=args.target_writes, target_p95_ms=args.target_p95_ms)
    print(line, flush=True)
    return 0 if ok else 1


def run_steps(args: argparse.Namespace) -> int:
    best: tuple[int, LoadResult] | None = None
    with running_stack("loadtest") as stack:
        log(machine_line(stack.database_url))
        users = args.step_users
        while users <= args.max_users:
            offered = users * args.user_rate * 60
            log(
                f"stage: {users} users offering {offered:,.0f} writes/min for {args.stage_duration} s"
            )
            result = locust_run(
                stack, users=users, writes_per_minute=offered, duration=args.stage_duration
            )
            stack.check_alive()
            p95 = result.write_percentile(95)
            print(
                f"step {users} users: offered {offered:,.0f} writes/min, achieved "
                f"{result.writes_per_minute:,.0f} writes/min, {result.points_per_minute:,.0f} "
                f"points/min, p50 {result.write_percentile(50):.0f} ms, p95 {p95:.0f} ms, p99 "
                f"{result.write_percentile(99):.0f} ms, {result.server_errors} 5xx, "
                f"{result.failed} failed",
                flush=True,
            )
            if (
                p95 >= args.target_p95_ms
                or result.failed
                or result.writes_per_minute < 0.95 * offered
            ):
                break
            best = (users, result)
            users += args.step_users
    if best is None:
        print("step: no stage met the latency target", flush=True)
        return 1
    users, result = best
    print(
        f"step: highest rate meeting p95 < {args.target_p95_ms:g} ms: "
        f"{result.writes_per_minute:,.0f} writes/min ({result.points_per_minute:,.0f} points/min) "
        f"with {users} users, p95 {result.write_percentile(95):.0f} ms",
        flush=True,
    )
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--duration", type=duration, default=120, help="e.g. 120, 90s, 2m (default 2m)")
    p.add_argument("--users", type=int, default=60, help="locust users (default 60)")
    p.add_argument("--rate", type=float, default=11_000, help="writes/min offered (default 11,000)")
    p.add_argument("--target-writes", type=float, default=TARGET_WRITES_PER_MINUTE)
    p.add_argument("--target-p95-ms", type=float, default=TARGET_P95_MS)
    p.add_argument("--step", action="store_true", help="search the highest rate meeting p95")
    p.add_argument("--step-users", type=int, default=20, help="users added per stage")
    p.add_argument("--user-rate", type=float, default=3.0, help="writes/s per user in a stage")
    p.add_argument("--max-users", type=int, default=400)
    p.add_argument("--stage-duration", type=duration, default=45)
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    return run_steps(args) if args.step else run_once(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
