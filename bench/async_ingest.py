"""Asynchronous ingestion: how fast a 202 comes back, and how fast workers drain the queue.

    make bench-queue                          # or, with DATABASE_URL and REDIS_URL set:
    python -m bench.async_ingest --batches 300

For each number of Celery worker processes (--worker-counts, default 1 and 2):

  (a) acknowledgement: --batches POSTs of 1000-point batches to /api/metrics/batch with
      `Prefer: respond-async` over --connections connections, with no worker running, so the
      figure is the cost of validating, storing the outbox row and sending the task: 202/s and
      p50/p95/p99 latency. For scale, the same bodies are also sent once without the header
      (synchronous 201) before the first run;
  (b) drain: a `celery worker --concurrency N` is started on the queue filled by (a); the rate is
      the points of those batches over the time from the first claim to the last commit, both
      read from ingest_batches.

Each figure is printed beside its ceiling from the same run: the 202 against the synchronous 201
of the same bodies, the drain against the storage ceiling (`points_ingest` in-process, COPY and
rollup upserts, from 2 processes, as bench/ingest.py measures it).

Everything runs against a database of its own (gf_bench_queue, dropped at exit) and a Celery queue
name of its own on the Redis named by REDIS_URL, with the service under gunicorn
(deploy/gunicorn.conf.py, DEBUG off).
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import threading
import time
from dataclasses import dataclass, field

from bench import _common, _loads, _runners, _servers, _workers
from bench._loads import BATCH_SIZE
from bench._tallies import verdict, window_after

DATABASE_NAME = "gf_bench_queue"
# The goals these figures answer to (docs/PERFORMANCE.md, "Where the goals stand").
TARGET_ACK_RATIO = 2.0
TARGET_ACK_P95_MS = 25.0
TARGET_DRAIN_RATIO = 0.7
BODIES = 16


@dataclass
class Latencies:
    ok: int = 0
    errors: int = 0
    first_error: str = ""
    samples_ms: list[float] = field(default_factory=list)
    seconds: float = 0.0

    def p(self, q: float) -> float:
        return _common.percentile(self.samples_ms, q)


def post_all(
    host: str, port: int, key: str, bodies: list[bytes], count: int, connections: int, *,
    respond_async: bool,
) -> Latencies:  # fmt: skip
    """Send `count` bodies over `connections` connections; time each response."""
    headers = {"Content-Type": "application/json", "X-API-Key": key}
    expected = 201
    if respond_async:
        headers["Prefer"] = "respond-async"
        expected = 202
    result = Latencies()
    lock = threading.Lock()
    next_index = iter(range(count))

    def loop() -> None:
        conn = http.client.HTTPConnection(host, port, timeout=60)
        while True:
            with lock:
                index = next(next_index, None)
            if index is None:
                break
            started = time.perf_counter()
            conn.request("POST", "/api/metrics/batch", bodies[index % len(bodies)], headers)
            response = conn.getresponse()
            payload = response.read()
            elapsed_ms = (time.perf_counter() - started) * 1000
            with lock:
                if response.status == expected:
                    result.ok += 1
                    result.samples_ms.append(elapsed_ms)
                else:
                    result.errors += 1
                    result.first_error = (
                        result.first_error or f"{response.status} {payload[:300]!r}"
                    )
        conn.close()

    threads = [threading.Thread(target=loop) for _ in range(connections)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    result.seconds = time.perf_counter() - started
    if result.errors:
        _common.log(f"{result.errors} failed requests; first: {result.first_error}")
    if not result.ok:
        raise SystemExit("bench: no request succeeded")
    return result


def drain(database_url: str, batch_ids: tuple[int, int], timeout: float) -> tuple[int, float]:
    """Wait until every batch in the id range is finished; return (points, seconds)."""
    import psycopg

    first, last = batch_ids
    deadline = time.monotonic() + timeout
    with psycopg.connect(database_url, autocommit=True) as conn:
        while True:
            open_, failed = conn.execute(
                "SELECT count(*) FILTER (WHERE state IN ('pending', 'running')),"
                " count(*) FILTER (WHERE state = 'failed')"
                " FROM ingest_batches WHERE id BETWEEN %s AND %s",
                [first, last],
            ).fetchone()
            if not open_:
                break
            if time.monotonic() > deadline:
                states = conn.execute(
                    "SELECT state, attempts, left(error, 200), count(*) FROM ingest_batches"
                    " WHERE id BETWEEN %s AND %s GROUP BY 1, 2, 3 ORDER BY 1, 2",
                    [first, last],
                ).fetchall()
                raise SystemExit(
                    f"bench: {open_} batches still open after {timeout:g} s; by state: {states}"
                )
            time.sleep(0.2)
        if failed:
            raise SystemExit(f"bench: {failed} batches failed")
        points, seconds = conn.execute(
            "SELECT sum(points), extract(epoch FROM max(processed_at) - min(claimed_at))"
            " FROM ingest_batches WHERE id BETWEEN %s AND %s",
            [first, last],
        ).fetchone()
    return int(points), float(seconds)


def batch_id_range(database_url: str, after: int) -> tuple[int, int]:
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as conn:
        low, high = conn.execute(
            "SELECT min(id), max(id) FROM ingest_batches WHERE id > %s", [after]
        ).fetchone()
    return low, high


@dataclass(frozen=True)
class Run:
    workers: int
    ack: Latencies
    points: int
    drain_seconds: float


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=300, help="batches per run (1000 points)")
    parser.add_argument("--connections", type=int, default=4, help="concurrent HTTP connections")
    parser.add_argument("--web-workers", type=int, default=4, help="gunicorn worker processes")
    parser.add_argument(
        "--worker-counts", default="1,2", help="Celery worker processes per run, comma-separated"
    )
    parser.add_argument("--timeout", type=float, default=600, help="seconds allowed per drain")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    counts = [int(n) for n in args.worker_counts.split(",")]
    runs: list[Run] = []
    with _runners.scratch(DATABASE_NAME, key_name="bench-queue", queue=True) as run:
        env, key, bench_url, queue = run.env, run.key, run.database_url, run.env["CELERY_QUEUE"]
        now = time.time()
        bodies = [
            json.dumps({"points": _loads.batch_points(n % 4, n, now)}).encode()
            for n in range(BODIES)
        ]
        with _servers.gunicorn(env, workers=args.web_workers) as (host, port):
            _common.log(f"synchronous 201, {args.batches} batches for scale")
            sync = post_all(
                host, port, key, bodies, args.batches, args.connections, respond_async=False
            )
            _common.log("storage ceiling: points_ingest in-process from 2 processes")
            ceiling = _workers.batch_direct_run(env, 2, window_after(3.0, 10.0))
            ceiling_rate = ceiling.done / 10.0
            last_id = 0
            for workers in counts:
                _common.log(f"({workers} worker process(es)) acknowledging {args.batches} batches")
                ack = post_all(
                    host, port, key, bodies, args.batches, args.connections, respond_async=True
                )
                ids = batch_id_range(bench_url, last_id)
                last_id = ids[1]
                _common.log(f"({workers} worker process(es)) draining")
                with _servers.celery_worker(env, concurrency=workers, queue=queue):
                    points, seconds = drain(bench_url, ids, args.timeout)
                runs.append(Run(workers, ack, points, seconds))
    machine = run.machine
    lines = [
        f"machine:  {machine}",
        f"service:  gunicorn, {args.web_workers} sync workers, deploy/gunicorn.conf.py, DEBUG off; "
        f"Celery prefork workers, same settings",
        f"load:     {args.batches} batches of {BATCH_SIZE} points per run over "
        f"{args.connections} connections",
        "",
        f"synchronous 201 (for scale)   {sync.ok / sync.seconds:>7,.1f} batches/s   "
        f"p50 {sync.p(50):.1f} ms  p95 {sync.p(95):.1f} ms  p99 {sync.p(99):.1f} ms",
    ]
    lines.append(
        f"storage ceiling (2 processes) {ceiling_rate:>10,.0f} points/s"
        + (f"   ({ceiling.errors} errors: {ceiling.first_error})" if ceiling.errors else "")
    )
    sync_rate = sync.ok / sync.seconds
    for run in runs:
        ack_rate = run.ack.ok / run.ack.seconds
        drain_rate = run.points / run.drain_seconds
        lines += [
            f"[{run.workers} worker process(es)]",
            f"  202 acknowledgement         {ack_rate:>7,.1f} batches/s   "
            f"p50 {run.ack.p(50):.1f} ms  p95 {run.ack.p(95):.1f} ms  p99 {run.ack.p(99):.1f} ms",
            f"  ratio 202 / 201             {ack_rate / sync_rate:>7.2f}x   target ≥ "
            f"{TARGET_ACK_RATIO:g}x with p95 ≤ {TARGET_ACK_P95_MS:g} ms: "
            + verdict(
                ack_rate / sync_rate >= TARGET_ACK_RATIO and run.ack.p(95) <= TARGET_ACK_P95_MS
            ),
            f"  drain                       {drain_rate:>10,.0f} points/s "
            f"({run.points:,} points in {run.drain_seconds:.1f} s)",
            f"  ratio drain / ceiling       {drain_rate / ceiling_rate:>7.2f}    target ≥ "
            f"{TARGET_DRAIN_RATIO:g} (2 worker processes): "
            + (
                verdict(drain_rate / ceiling_rate >= TARGET_DRAIN_RATIO)
                if run.workers >= 2
                else "-"
            ),
        ]
    print("\n".join(lines), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
