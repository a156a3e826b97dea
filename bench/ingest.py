"""Ingestion throughput and latency, each beside the ceiling it is measured against.

    make bench-ingest                         # or, with DATABASE_URL and REDIS_URL set:
    python -m bench.ingest --rounds 3        # medians of three rounds

One run prints four figures and two ratios:

  (1) HTTP batches: points/s through POST /api/metrics/batch, 1000-point batches, from
      --clients processes, near-now timestamps, two tags per point;
  (2) the storage ceiling: the same points, from the same number of processes, written by
      `metrics.services.points_ingest` in-process (COPY + rollup upserts), no HTTP, no JSON;
  (3) HTTP single counters: req/s and p50/p95/p99 latency of POST /api/metrics/counter over
      --connections concurrent connections;
  (4) the bare ceiling: the same bodies to a DRF view that validates them and does one INSERT,
      without authentication, rate limiting or rollups (bench/bare_app.py), same gunicorn config;
  (5) with --single-async: (3) with `Prefer: respond-async`, each point acknowledged 202 and
      queued, while one Celery worker process drains the queue on the same cores.

Each phase also prints the CPU time every kind of process used per batch or request inside its
window (gunicorn, PostgreSQL, Redis, the benchmark's own clients or writers, other), read from
/proc: where the ratios' differences are spent.

Everything runs against a database of its own (gf_bench_ingest, dropped at exit) on the server
named by DATABASE_URL, and the service under gunicorn with deploy/gunicorn.conf.py, DEBUG off.
Clients are separate processes; each phase is a fixed warm-up followed by a fixed measured window.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass, field

from bench import _common, _loads, _options, _runners, _servers, _workers
from bench._loads import BATCH_SIZE
from bench._tallies import Tally, Window, percentiles, tally_check, verdict, window_after

DATABASE_NAME = "gf_bench_ingest"
TARGET_BATCH_RATIO = 0.80
TARGET_SINGLE_RATIO = 0.70
TARGET_P95_MS = 25.0


# --- driver ----------------------------------------------------------------------------------


@dataclass
class Round:
    batch_http: float  # points/s
    batch_direct: float
    single: float  # req/s
    single_p: tuple[float, float, float]
    bare: float
    bare_p: tuple[float, float, float]
    # Per phase, the CPU milliseconds each kind of process used per unit (a 1000-point batch,
    # or a request) inside the measured window.
    cpu: dict[str, dict[str, float]] = field(default_factory=dict)
    # --single-async only: req/s answered 202 with a worker draining, and the batches the
    # worker had not written when the window closed.
    single_async: float | None = None
    single_async_p: tuple[float, float, float] | None = None
    unfinished: int | None = None


def _phase(cpu: dict, label: str, window: Window, run, units) -> Tally:
    """Run one phase in `window`; record its CPU per unit (`units(tally)`) under `label`."""
    thread, readings = _common.at_window_edges(window, _common.cpu_by_process)
    tally = run(window)
    thread.join()
    tally_check(label, tally)
    count = units(tally)
    cpu[label[:3]] = {
        kind: seconds * 1000 / count
        for kind, seconds in _common.cpu_used(readings["start"], readings["end"]).items()
    }
    return tally


def run_round(args: argparse.Namespace, env: dict, bare_env: dict, key: str) -> Round:
    """The four phases in the order of their ratios, so each pair sees the same machine."""
    duration, warmup = args.duration, args.warmup
    # Both services stay up for the whole round; an idle sync worker costs no CPU.
    with (
        _servers.gunicorn(env, workers=args.workers, threads=args.threads) as (host, port),
        _servers.gunicorn(bare_env, workers=args.workers, threads=args.threads) as bare_address,
    ):
        cpu: dict[str, dict[str, float]] = {}
        batches = lambda tally: tally.done / BATCH_SIZE  # noqa: E731
        requests = lambda tally: tally.done  # noqa: E731
        _common.log(f"(1) HTTP batches, {args.clients} clients")
        batch_http = _phase(
            cpu, "(1) HTTP batches", window_after(warmup, duration),
            lambda w: _workers.batch_http_run(
                host, port, key, _loads.clients_batch_bodies(args.clients, time.time()), w
            ),
            batches,
        )  # fmt: skip
        _common.log(f"(2) storage ceiling, {args.clients} processes")
        direct = _phase(
            cpu, "(2) storage ceiling", window_after(warmup, duration),
            lambda w: _workers.batch_direct_run(env, args.clients, w), batches,
        )  # fmt: skip
        _common.log(f"(3) HTTP single counters, {args.connections} connections")
        single = _phase(
            cpu, "(3) HTTP single counters", window_after(warmup, duration),
            lambda w: _workers.single_run(
                host, port, "/api/metrics/counter", key, args.connections, w
            ),
            requests,
        )  # fmt: skip
        _common.log(f"(4) bare ceiling, {args.connections} connections")
        bare = _phase(
            cpu, "(4) bare ceiling", window_after(warmup, duration),
            lambda w: _workers.single_run(*bare_address, "/bare/counter", "", args.connections, w),
            requests,
        )  # fmt: skip
        single_async = unfinished = None
        if args.single_async:
            _common.log("(5) HTTP single counters acknowledged 202, one worker process draining")
            with _servers.celery_worker(env, concurrency=1, queue=env["CELERY_QUEUE"]):
                single_async = _phase(
                    cpu, "(5) HTTP single counters, 202", window_after(warmup, duration),
                    lambda w: _workers.single_run(
                        host, port, "/api/metrics/counter", key, args.connections, w,
                        respond_async=True,
                    ),
                    requests,
                )  # fmt: skip
                states = _common.queue_state(env["DATABASE_URL"])
                unfinished = sum(states[s] for s in _common.OPEN_STATES)
    return Round(
        batch_http=batch_http.done / duration,
        batch_direct=direct.done / duration,
        single=single.done / duration,
        single_p=percentiles(single),
        bare=bare.done / duration,
        bare_p=percentiles(bare),
        cpu=cpu,
        single_async=None if single_async is None else single_async.done / duration,
        single_async_p=None if single_async is None else percentiles(single_async),
        unfinished=unfinished,
    )


def report(args: argparse.Namespace, machine: str, rounds: list[Round]) -> None:
    def med(attr: str, index: int | None = None) -> float:
        return _runners.median(rounds, attr, index)

    kind = (
        f"{args.workers} sync workers"
        if args.threads == 1
        else (f"{args.workers} workers x {args.threads} threads (gthread)")
    )
    batch_ratio = med("batch_http") / med("batch_direct")
    single_ratio = med("single") / med("bare")
    # Rounds drift with the host's load; each round's own ratio compares phases run seconds apart.
    round_ratios = [r.single / r.bare for r in rounds if r.bare]
    p95 = med("single_p", 1)
    lines = [
        f"machine:  {machine}",
        f"service:  gunicorn, {kind}, deploy/gunicorn.conf.py, DEBUG off",
        f"load:     {args.clients} batch clients, {args.connections} single-point connections, "
        f"{args.warmup:g} s warm-up + {args.duration:g} s measured per phase; "
        f"median of {len(rounds)} round(s)",
        "",
        f"(1) HTTP batch of 1000         {med('batch_http'):>10,.0f} points/s",
        f"(2) storage ceiling            {med('batch_direct'):>10,.0f} points/s",
        f"    (1)/(2) = {batch_ratio:.1%}   target ≥ {TARGET_BATCH_RATIO:.0%}: "
        f"{verdict(batch_ratio >= TARGET_BATCH_RATIO)}",
        f"(3) HTTP single counter        {med('single'):>10,.0f} req/s   "
        f"p50 {med('single_p', 0):.1f} ms  p95 {p95:.1f} ms  p99 {med('single_p', 2):.1f} ms",
        f"(4) bare DRF + one INSERT      {med('bare'):>10,.0f} req/s   "
        f"p50 {med('bare_p', 0):.1f} ms  p95 {med('bare_p', 1):.1f} ms  p99 {med('bare_p', 2):.1f} ms",
        f"    (3)/(4) = {single_ratio:.1%}   target ≥ {TARGET_SINGLE_RATIO:.0%}: "
        f"{verdict(single_ratio >= TARGET_SINGLE_RATIO)}; "
        f"p95 ≤ {TARGET_P95_MS:g} ms: {verdict(p95 <= TARGET_P95_MS)}",
    ]
    if len(round_ratios) > 1:
        lines.append(
            f"    median of the rounds' own (3)/(4): {statistics.median(round_ratios):.1%}"
        )
    if args.single_async:
        lines += [
            f"(5) HTTP single counter, 202   {med('single_async'):>10,.0f} req/s   "
            f"p50 {med('single_async_p', 0):.1f} ms  p95 {med('single_async_p', 1):.1f} ms  "
            f"p99 {med('single_async_p', 2):.1f} ms",
            f"    (5)/(4) = {med('single_async') / med('bare'):.1%}   "
            f"(Prefer: respond-async, one worker process draining; no target); "
            f"{med('unfinished'):,.0f} batches unwritten when the window closed",
        ]
    lines += ["", "CPU per unit inside the window, ms (medians; a unit is a batch or a request):"]
    for phase in ("(1)", "(2)", "(3)", "(4)", "(5)")[: 5 if args.single_async else 4]:
        kinds = sorted({kind for r in rounds for kind in r.cpu.get(phase, {})})
        per_kind = {
            k: statistics.median(r.cpu.get(phase, {}).get(k, 0.0) for r in rounds) for k in kinds
        }
        total = statistics.median(sum(r.cpu.get(phase, {}).values()) for r in rounds)
        lines.append(
            f"  {phase} "
            + "  ".join(f"{k} {v:.2f}" for k, v in per_kind.items() if v >= 0.005)
            + f"  = {total:.2f}"
        )
    lines += _runners.round_lines(
        rounds,
        lambda r: (
            f"(1) {r.batch_http:,.0f}  (2) {r.batch_direct:,.0f}  "
            f"(3) {r.single:,.0f} req/s p95 {r.single_p[1]:.1f} ms  "
            f"(4) {r.bare:,.0f} req/s p95 {r.bare_p[1]:.1f} ms  "
            f"(3)/(4) {r.single / r.bare:.1%}"
            + (f"  (5) {r.single_async:,.0f} req/s" if r.single_async is not None else "")
        ),
    )
    print("\n".join(lines), flush=True)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    _options.round_options(parser, clients=3, clients_help="batch client processes (2-4)")
    parser.add_argument("--connections", type=int, default=16, help="single-point connections")
    parser.add_argument("--threads", type=int, default=1, help="threads per worker (gthread if >1)")
    parser.add_argument(
        "--single-async",
        action="store_true",
        help="add (5): single counters acknowledged 202 (Prefer: respond-async) while one "
        "Celery worker process drains them",
    )
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    # The queue takes the 202s of phase (5).
    with _runners.scratch(DATABASE_NAME, key_name="bench-ingest", queue=True) as run:
        bare_env = {**run.env, "DJANGO_SETTINGS_MODULE": "bench.bare_settings"}
        rounds = _runners.rounds_run(
            args.rounds, lambda n: run_round(args, run.env, bare_env, run.key)
        )
    report(args, run.machine, rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
