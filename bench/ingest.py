"""Ingestion throughput and latency, each beside the ceiling it is measured against.

    make bench-ingest                         # or, with DATABASE_URL and REDIS_URL set:
    python bench/ingest.py --rounds 3         # medians of three rounds

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
import http.client
import json
import multiprocessing
import os
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

# Run as a script, Python puts bench/ first on sys.path, where bench/queue.py would shadow the
# standard library's queue module; the repository root takes its place.
sys.path[0] = str(Path(__file__).resolve().parent.parent)

from bench import _common  # noqa: E402

DATABASE_NAME = "gf_bench_ingest"
BATCH_SIZE = 1000
# Forty metrics (half counters, half values) x five slots per client host: 200 series per
# client, each touched five times per batch, timestamps spread over the last few seconds.
METRICS = [f"bench.counter.{i:02d}" for i in range(20)] + [
    f"bench.value.{i:02d}" for i in range(20)
]
SLOTS = 5
BODIES_PER_CLIENT = 8
TARGET_BATCH_RATIO = 0.80
TARGET_SINGLE_RATIO = 0.70
TARGET_P95_MS = 25.0

_fork = multiprocessing.get_context("fork")


# --- workload --------------------------------------------------------------------------------


def batch_points(client: int, variant: int, now: float) -> list[dict]:
    """One 1000-point batch as the JSON-ready list a metrics agent would send."""
    points = []
    for j in range(BATCH_SIZE):
        name = METRICS[j % len(METRICS)]
        kind = "counter" if name.startswith("bench.counter") else "value"
        points.append(
            {
                "type": kind,
                "name": name,
                "value": 1 if kind == "counter" else float((j * 7 + variant) % 97),
                "timestamp": round(now - (j % 50) * 0.1 - variant * 0.01, 3),
                "tags": {"host": f"host-{client}", "slot": str((j // len(METRICS)) % SLOTS)},
            }
        )
    return points


def single_bodies() -> list[bytes]:
    return [
        json.dumps({"name": "bench.single", "value": 1, "tags": {"host": f"host-{n}"}}).encode()
        for n in range(8)
    ]


# --- results ---------------------------------------------------------------------------------


@dataclass
class Tally:
    """What one client process saw inside the measured window."""

    done: int = 0  # points (batches) or requests (single) completed in the window
    errors: int = 0
    first_error: str = ""
    latencies_ms: list[float] = field(default_factory=list)

    def add(self, other: Tally) -> None:
        self.done += other.done
        self.errors += other.errors
        self.first_error = self.first_error or other.first_error
        self.latencies_ms += other.latencies_ms


@dataclass(frozen=True)
class Window:
    start: float  # time.time() at which counting starts (after the warm-up)
    end: float


def _merge(tallies: list[Tally]) -> Tally:
    total = Tally()
    for tally in tallies:
        total.add(tally)
    return total


# --- (1) batches over HTTP -------------------------------------------------------------------


def _batch_http_client(args: tuple) -> Tally:
    host, port, key, bodies, window = args
    headers = {"Content-Type": "application/json", "X-API-Key": key}
    conn = http.client.HTTPConnection(host, port, timeout=60)
    tally = Tally()
    i = 0
    while True:
        if time.time() >= window.end:
            break
        conn.request("POST", "/api/metrics/batch", bodies[i % len(bodies)], headers)
        response = conn.getresponse()
        payload = response.read()
        finished = time.time()
        i += 1
        if not window.start <= finished <= window.end:
            continue
        if response.status == 201:
            tally.done += BATCH_SIZE
        else:
            tally.errors += 1
            tally.first_error = tally.first_error or f"{response.status} {payload[:300]!r}"
    conn.close()
    return tally


def run_batch_http(host: str, port: int, key: str, clients: int, window: Window) -> Tally:
    now = time.time()
    jobs = [
        (
            host,
            port,
            key,
            [
                json.dumps({"points": batch_points(c, v, now)}).encode()
                for v in range(BODIES_PER_CLIENT)
            ],
            window,
        )
        for c in range(clients)
    ]
    with _fork.Pool(clients) as pool:
        return _merge(pool.map(_batch_http_client, jobs))


# --- (2) the storage ceiling -----------------------------------------------------------------


def _batch_direct_client(args: tuple) -> Tally:
    env, client, now, window = args
    # Django is set up only here, after the fork, against the benchmark's database.
    os.environ.update(env)
    import django

    django.setup()
    from datetime import UTC, datetime

    from glowing_fiesta.gc_tuning import gc_settle

    # As the service's processes do (deploy/gunicorn.conf.py, the Celery pool): the ceiling
    # gets every tuning the measured path gets.
    gc_settle(load_urls=False)

    from django.db import connections

    from metrics.services import PointInput, points_ingest

    batches = [
        [
            PointInput(
                type=p["type"],
                name=p["name"],
                value=float(p["value"]),
                timestamp=datetime.fromtimestamp(p["timestamp"], UTC),
                tags=p["tags"],
            )
            for p in batch_points(client, v, now)
        ]
        for v in range(BODIES_PER_CLIENT)
    ]
    tally = Tally()
    i = 0
    while time.time() < window.end:
        try:
            stored = points_ingest(points=batches[i % len(batches)])
        except Exception as exc:
            tally.errors += 1
            tally.first_error = tally.first_error or repr(exc)[:300]
            stored = 0
        i += 1
        if window.start <= time.time() <= window.end:
            tally.done += stored
    connections.close_all()
    return tally


def run_batch_direct(env: dict[str, str], clients: int, window: Window) -> Tally:
    now = time.time()
    jobs = [(env, c, now, window) for c in range(clients)]
    with _fork.Pool(clients) as pool:
        return _merge(pool.map(_batch_direct_client, jobs))


# --- (3) and (4) single points at fixed concurrency ------------------------------------------


def _single_client(args: tuple) -> Tally:
    host, port, path, key, threads, bodies, window, respond_async = args
    headers = {"Content-Type": "application/json"}
    if key:
        headers["X-API-Key"] = key
    if respond_async:
        headers["Prefer"] = "respond-async"
    expected = 202 if respond_async else 201
    tallies = [Tally() for _ in range(threads)]

    def connection_loop(index: int) -> None:
        tally = tallies[index]
        # Sync gunicorn workers answer "Connection: close"; http.client reconnects by itself.
        conn = http.client.HTTPConnection(host, port, timeout=60)
        i = index
        while time.time() < window.end:
            started = time.perf_counter()
            conn.request("POST", path, bodies[i % len(bodies)], headers)
            response = conn.getresponse()
            payload = response.read()
            elapsed_ms = (time.perf_counter() - started) * 1000
            i += 1
            if not window.start <= time.time() <= window.end:
                continue
            if response.status == expected:
                tally.done += 1
                tally.latencies_ms.append(elapsed_ms)
            else:
                tally.errors += 1
                tally.first_error = tally.first_error or f"{response.status} {payload[:300]!r}"
        conn.close()

    workers = [threading.Thread(target=connection_loop, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return _merge(tallies)


def run_single(
    host: str,
    port: int,
    path: str,
    key: str,
    connections: int,
    window: Window,
    *,
    respond_async: bool = False,
) -> Tally:
    # Four connections per process: enough processes that the client side is not bound by one
    # GIL, few enough that they do not crowd the server on two cores.
    processes = max(1, connections // 4)
    per_process = [
        connections // processes + (n < connections % processes) for n in range(processes)
    ]
    jobs = [(host, port, path, key, n, single_bodies(), window, respond_async) for n in per_process]
    with _fork.Pool(processes) as pool:
        return _merge(pool.map(_single_client, jobs))


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


def window_after(warmup: float, duration: float) -> Window:
    # A little slack for the pool to fork before the warm-up starts.
    start = time.time() + 0.5 + warmup
    return Window(start=start, end=start + duration)


def tally_check(label: str, tally: Tally) -> None:
    """Log a phase's failed requests; stop the run when it completed nothing."""
    if tally.errors:
        _common.log(f"{label}: {tally.errors} failed requests; first: {tally.first_error}")
    if not tally.done:
        raise SystemExit(f"bench: {label} completed nothing in the measured window")


def _percentiles(tally: Tally) -> tuple[float, float, float]:
    return tuple(_common.percentile(tally.latencies_ms, q) for q in (50, 95, 99))  # type: ignore[return-value]


def run_round(args: argparse.Namespace, env: dict, bare_env: dict, key: str) -> Round:
    """The four phases in the order of their ratios, so each pair sees the same machine."""
    duration, warmup = args.duration, args.warmup
    # Both services stay up for the whole round; an idle sync worker costs no CPU.
    with (
        _common.gunicorn(env, workers=args.workers, threads=args.threads) as (host, port),
        _common.gunicorn(bare_env, workers=args.workers, threads=args.threads) as bare_address,
    ):
        cpu: dict[str, dict[str, float]] = {}
        batches = lambda tally: tally.done / BATCH_SIZE  # noqa: E731
        requests = lambda tally: tally.done  # noqa: E731
        _common.log(f"(1) HTTP batches, {args.clients} clients")
        batch_http = _phase(
            cpu, "(1) HTTP batches", window_after(warmup, duration),
            lambda w: run_batch_http(host, port, key, args.clients, w), batches,
        )  # fmt: skip
        _common.log(f"(2) storage ceiling, {args.clients} processes")
        direct = _phase(
            cpu, "(2) storage ceiling", window_after(warmup, duration),
            lambda w: run_batch_direct(env, args.clients, w), batches,
        )  # fmt: skip
        _common.log(f"(3) HTTP single counters, {args.connections} connections")
        single = _phase(
            cpu, "(3) HTTP single counters", window_after(warmup, duration),
            lambda w: run_single(host, port, "/api/metrics/counter", key, args.connections, w),
            requests,
        )  # fmt: skip
        _common.log(f"(4) bare ceiling, {args.connections} connections")
        bare = _phase(
            cpu, "(4) bare ceiling", window_after(warmup, duration),
            lambda w: run_single(*bare_address, "/bare/counter", "", args.connections, w),
            requests,
        )  # fmt: skip
        single_async = unfinished = None
        if args.single_async:
            # Imported here: bench/async_ingest.py imports this module.
            from bench.async_ingest import celery_worker

            _common.log("(5) HTTP single counters acknowledged 202, one worker process draining")
            with celery_worker(env, concurrency=1, queue=env["CELERY_QUEUE"]):
                single_async = _phase(
                    cpu, "(5) HTTP single counters, 202", window_after(warmup, duration),
                    lambda w: run_single(
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
        single_p=_percentiles(single),
        bare=bare.done / duration,
        bare_p=_percentiles(bare),
        cpu=cpu,
        single_async=None if single_async is None else single_async.done / duration,
        single_async_p=None if single_async is None else _percentiles(single_async),
        unfinished=unfinished,
    )


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def report(args: argparse.Namespace, machine: str, rounds: list[Round]) -> None:
    def med(attr: str, index: int | None = None) -> float:
        values = [getattr(r, attr) if index is None else getattr(r, attr)[index] for r in rounds]
        return statistics.median(values)

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
    if len(rounds) > 1:
        lines.append("")
        for n, r in enumerate(rounds, 1):
            lines.append(
                f"round {n}: (1) {r.batch_http:,.0f}  (2) {r.batch_direct:,.0f}  "
                f"(3) {r.single:,.0f} req/s p95 {r.single_p[1]:.1f} ms  "
                f"(4) {r.bare:,.0f} req/s p95 {r.bare_p[1]:.1f} ms  "
                f"(3)/(4) {r.single / r.bare:.1%}"
                + (f"  (5) {r.single_async:,.0f} req/s" if r.single_async is not None else "")
            )
    print("\n".join(lines), flush=True)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=3, help="batch client processes (2-4)")
    parser.add_argument("--connections", type=int, default=16, help="single-point connections")
    parser.add_argument("--workers", type=int, default=4, help="gunicorn worker processes")
    parser.add_argument("--threads", type=int, default=1, help="threads per worker (gthread if >1)")
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per phase")
    parser.add_argument("--warmup", type=float, default=3.0, help="warm-up seconds per phase")
    parser.add_argument("--rounds", type=int, default=1, help="repeat and report medians")
    parser.add_argument(
        "--single-async",
        action="store_true",
        help="add (5): single counters acknowledged 202 (Prefer: respond-async) while one "
        "Celery worker process drains them",
    )
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    database_url = _common.required_env("DATABASE_URL")
    redis_url = _common.required_env("REDIS_URL")
    setup_env = _common.service_env(database_url, redis_url)
    with (
        _common.scratch_database(database_url, DATABASE_NAME, setup_env) as bench_url,
        _common.own_queue(redis_url) as queue,  # for the 202s of phase (5)
    ):
        env = _common.service_env(bench_url, redis_url, CELERY_QUEUE=queue)
        bare_env = {**env, "DJANGO_SETTINGS_MODULE": "bench.bare_settings"}
        key = _common.api_key_create(env, name="bench-ingest", rate_limit=10_000_000)
        machine = _common.machine_summary(bench_url)
        rounds = []
        for n in range(args.rounds):
            _common.log(f"round {n + 1} of {args.rounds}")
            rounds.append(run_round(args, env, bare_env, key))
    report(args, machine, rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
