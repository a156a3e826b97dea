"""Self-monitoring overhead: single-point counter throughput with it on and off, in one run.

    make bench-monitoring [ARGS="--rounds 3 --duration 10"]

Two gunicorn services with deploy/gunicorn.conf.py run side by side on one database of their
own (gf_bench_monitoring, dropped at exit): "on" with everything a production host has
(PROMETHEUS_MULTIPROC_DIR, figures recorded per request, the own-store flush every
SELF_METRICS_INTERVAL seconds, a Prometheus scrape of /metrics every 15 s);
"off" with SELF_METRICS=0 and SELF_METRICS_RECORDING=0. Each round runs one phase of each, in
a random order, with the same clients (bench/ingest.py's single-point workload, bench/_workers.py), so both see the
same machine;
the first figure is the median ratio of on to off over the rounds. Target: at least 95%.

On a shared machine throughput swings with the neighbours' load, so each phase also reads the
CPU time the service's gunicorn processes spent in the measured window (/proc/<pid>/stat), and
reports CPU per request: the service's cost, which the neighbours change less. Its ratio
(off / on) is the throughput ratio a saturated, dedicated host would see. Both still swing by
tens of percent when the machine is oversubscribed, so last, in a process of its own, whole
requests through Django's test client are timed in CPU with recording off and on, alternated:
that difference, added to the HTTP phases' CPU per request, estimates the ratio steadily.
"""

from __future__ import annotations

import argparse
import http.client
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from bench import _common, _options, _servers, _workers
from bench._tallies import tally_check, window_after

DATABASE_NAME = "gf_bench_monitoring"
# tmpfs; the directory is made by mkdtemp (private, unique), so a shared parent is safe.
SHM = "/dev/shm" if os.path.isdir("/dev/shm") else None  # noqa: S108
TARGET_RATIO = 0.95
# As the stock scrape configuration (deploy/prometheus/prometheus.yml).
SCRAPE_EVERY_SECONDS = 15.0


def _scraper(address: tuple[str, int], key: str, window, stop: threading.Event, sizes: list[int]):
    """Scrape /metrics at the start of the measured window, then every SCRAPE_EVERY_SECONDS."""
    if stop.wait(max(0.0, window.start - time.time())):
        return
    while True:
        conn = http.client.HTTPConnection(*address, timeout=30)
        conn.request("GET", "/metrics", headers={"Authorization": f"Bearer {key}"})
        response = conn.getresponse()
        body = response.read()
        conn.close()
        if response.status != 200:
            raise SystemExit(f"bench: /metrics answered {response.status}: {body[:300]!r}")
        sizes.append(len(body))
        if stop.wait(SCRAPE_EVERY_SECONDS):
            return


def service_cpu_seconds(port: int) -> float:
    """User + system CPU of the gunicorn processes serving `port` (arbiter and workers)."""
    marker = f"127.0.0.1:{port}".encode()
    total = 0.0
    for pid in _common.process_ids():
        if marker not in (_common.process_command(pid) or b""):
            continue
        stat = _common.process_stat(pid)
        total += stat.cpu_seconds if stat else 0.0  # 0 once exited meanwhile
    return total


def run_phase(address: tuple[str, int], key: str, args: argparse.Namespace, *, scrape: bool):
    window = window_after(args.warmup, args.duration)
    stop = threading.Event()
    sizes: list[int] = []
    scraper = threading.Thread(target=_scraper, args=(address, key, window, stop, sizes))
    meter, cpu = _common.at_window_edges(window, lambda: service_cpu_seconds(address[1]))
    if scrape:
        scraper.start()
    try:
        tally = _workers.single_run(*address, "/api/metrics/counter", key, args.connections, window)
    finally:
        stop.set()
        if scrape:
            scraper.join()
        meter.join()
    tally_check("single counters", tally)
    cpu_ms = (cpu["end"] - cpu["start"]) * 1000 / tally.done
    return tally.done / args.duration, _common.percentile(tally.latencies_ms, 95), cpu_ms, sizes


RECORDING_LOOPS = 50_000
IN_PROCESS_REQUESTS = 200
IN_PROCESS_PAIRS = 20


def measure_recording(key: str) -> None:
    """Print two figures, measured in this one process with the "on" environment:

    - the microseconds the recording calls of one single-point request take (the request's
      figure, its points, its timed write, and this process's own-store deltas);
    - the CPU milliseconds of one whole POST /api/metrics/counter through Django's test client
      (middleware, authentication, rate limit, validation, the write), recording off and on,
      alternated IN_PROCESS_PAIRS times: one interpreter, no HTTP, no neighbours' scheduling
      in the figure, so it resolves differences of a few percent;
    - the CPU milliseconds of one own-store flush of what those requests recorded.
    """
    import json

    import django

    django.setup()
    from django.conf import settings
    from django.test import Client
    from django.utils import timezone

    from glowing_fiesta import monitoring
    from glowing_fiesta.monitoring import sink
    from selfmetrics.selfstore import SelfStore

    store = SelfStore(interval=3600)  # deltas kept; flushed by hand below
    sink.sink_register(lambda: store)
    write = monitoring.db_write_timed(lambda points: None)
    one = [object()]
    started = time.perf_counter()
    for _ in range(RECORDING_LOOPS):
        monitoring.request_observe(method="POST", route="metric-counter", status=201, seconds=0.003)
        monitoring.points_ingested(1)
        write(one)
    calls_us = (time.perf_counter() - started) / RECORDING_LOOPS * 1e6
    store.take()

    client = Client(headers={"X-API-Key": key})
    body = json.dumps({"name": "bench.inprocess", "tags": {"host": "a"}})

    def batch() -> float:
        cpu = time.process_time()
        for _ in range(IN_PROCESS_REQUESTS):
            response = client.post("/api/metrics/counter", body, content_type="application/json")
            assert response.status_code == 201, response.content
        return (time.process_time() - cpu) * 1000 / IN_PROCESS_REQUESTS

    batch()  # warm caches and connections
    cpu = {"off": [], "on": []}
    for _ in range(IN_PROCESS_PAIRS):
        for label in random.sample(["off", "on"], 2):
            settings.SELF_METRICS_RECORDING = label == "on"
            cpu[label].append(batch())
    flush_cpu = time.process_time()
    store.flush(now=timezone.now())
    flush_ms = (time.process_time() - flush_cpu) * 1000
    print(json.dumps({
        "calls_us": calls_us,
        "off_ms": statistics.median(cpu["off"]),
        "on_ms": statistics.median(cpu["on"]),
        "flush_ms": flush_ms,
        "flush_requests": IN_PROCESS_PAIRS * IN_PROCESS_REQUESTS,
    }))  # fmt: skip


def recording_cost(env: dict[str, str], key: str) -> dict:
    import json

    result = subprocess.run(
        [sys.executable, "-m", "bench.monitoring", "--measure-recording", key],
        env=env, cwd=_common.ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if result.returncode:
        raise SystemExit(f"bench: the in-process measurement failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv: list[str]) -> int:
    if argv[:1] == ["--measure-recording"]:
        measure_recording(argv[1])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=16, help="client connections")
    _options.round_options(parser, rounds=3, rounds_help="off/on pairs; medians reported")
    args = parser.parse_args(argv)

    database_url = _common.required_env("DATABASE_URL")
    redis_url = _common.required_env("REDIS_URL")
    setup_env = _common.service_env(database_url, redis_url)
    with (
        _common.scratch_database(database_url, DATABASE_NAME, setup_env) as bench_url,
        # On tmpfs, as the systemd units' /run/glowing-fiesta/prometheus.
        tempfile.TemporaryDirectory(prefix="gf-bench-prometheus-", dir=SHM) as multiproc_dir,
    ):
        base = _common.service_env(bench_url, redis_url)
        base.pop("PROMETHEUS_MULTIPROC_DIR", None)
        on_env = {**base, "PROMETHEUS_MULTIPROC_DIR": multiproc_dir, "SELF_METRICS": "true"}
        off_env = {**base, "SELF_METRICS": "false", "SELF_METRICS_RECORDING": "false"}
        key = _common.api_key_create(base, name="bench-monitoring", rate_limit=10_000_000)
        machine = _common.machine_summary(bench_url)
        results: dict[str, list[tuple[float, float, float]]] = {"off": [], "on": []}
        scrape_sizes: list[int] = []
        with (
            _servers.gunicorn(on_env, workers=args.workers) as on_address,
            _servers.gunicorn(off_env, workers=args.workers) as off_address,
        ):
            for n in range(args.rounds):
                pair = [("off", off_address), ("on", on_address)]
                random.shuffle(pair)  # neither always runs first
                for label, address in pair:
                    _common.log(f"round {n + 1}/{args.rounds}: self-monitoring {label}")
                    rate, p95, cpu_ms, sizes = run_phase(address, key, args, scrape=label == "on")
                    results[label].append((rate, p95, cpu_ms))
                    scrape_sizes += sizes
            own_points = _own_points(on_address, key)
        cost = recording_cost({**on_env, "PROCESS_ROLE": "cli", "LOG_LEVEL": "WARNING"}, key)

    ratios = [on[0] / off[0] for on, off in zip(results["on"], results["off"], strict=True)]
    ratio = statistics.median(ratios)
    med = {label: statistics.median(r[0] for r in rows) for label, rows in results.items()}
    p95 = {label: statistics.median(r[1] for r in rows) for label, rows in results.items()}
    cpu = {label: statistics.median(r[2] for r in rows) for label, rows in results.items()}
    cpu_ratios = [off[2] / on[2] for on, off in zip(results["on"], results["off"], strict=True)]
    cpu_ratio = statistics.median(cpu_ratios)
    # The in-process difference is the steady figure; the HTTP phases give what it adds to.
    added_us = max(0.0, (cost["on_ms"] - cost["off_ms"]) * 1000)
    estimate = cpu["off"] / (cpu["off"] + added_us / 1000)
    lines = [
        f"machine:  {machine}",
        f"service:  gunicorn, {args.workers} sync workers each, deploy/gunicorn.conf.py, DEBUG off",
        f"load:     {args.connections} connections of single counters, {args.warmup:g} s warm-up "
        f"+ {args.duration:g} s measured per phase; {args.rounds} off/on pair(s), medians",
        "",
        f"off (SELF_METRICS=0, recording off)  {med['off']:>8,.0f} req/s   p95 {p95['off']:.1f} ms"
        f"   service CPU {cpu['off']:.3f} ms/request",
        f"on  (recording, flush, scrapes)      {med['on']:>8,.0f} req/s   p95 {p95['on']:.1f} ms"
        f"   service CPU {cpu['on']:.3f} ms/request",
        f"    throughput on/off = {ratio:.1%} (pairs: {', '.join(f'{r:.1%}' for r in ratios)})",
        f"    CPU per request off/on = {cpu_ratio:.1%} "
        f"(pairs: {', '.join(f'{r:.1%}' for r in cpu_ratios)})",
        f"    target ≥ {TARGET_RATIO:.0%}: throughput {'met' if ratio >= TARGET_RATIO else 'MISSED'}, "
        f"CPU {'met' if cpu_ratio >= TARGET_RATIO else 'MISSED'}",
        "",
        f"in one process, {IN_PROCESS_PAIRS} off/on pairs of {IN_PROCESS_REQUESTS} requests "
        "through Django's test client (CPU time, no HTTP):",
        f"    off {cost['off_ms']:.3f} ms/request   on {cost['on_ms']:.3f} ms/request   "
        f"recording adds {added_us:.0f} µs/request",
        f"    the recording calls of one request alone: {cost['calls_us']:.1f} µs",
        f"    one own-store flush of {cost['flush_requests']:,} requests' figures: "
        f"{cost['flush_ms']:.1f} ms CPU",
        f"    => over HTTP, off {cpu['off']:.3f} ms/request of service CPU + {added_us:.0f} µs: "
        f"on/off = {estimate:.1%}   target ≥ {TARGET_RATIO:.0%}: "
        f"{'met' if estimate >= TARGET_RATIO else 'MISSED'}",
        f"    /metrics scrapes: {len(scrape_sizes)}, {statistics.median(scrape_sizes or [0]):,.0f} "
        f"bytes each; own-store points written: {own_points:,.0f}",
    ]
    print("\n".join(lines), flush=True)
    return 0


def _own_points(address: tuple[str, int], key: str) -> float:
    """How many points the own-store flush wrote (its self path of points_ingested)."""
    conn = http.client.HTTPConnection(*address, timeout=30)
    conn.request("GET", "/metrics", headers={"X-API-Key": key})
    text = conn.getresponse().read().decode()
    conn.close()
    for line in text.splitlines():
        if line.startswith('glowing_fiesta_points_ingested_total{path="self"}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
