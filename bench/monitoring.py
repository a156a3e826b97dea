"""Self-monitoring overhead: single-point counter throughput with it on and off, in one run.

    make bench-monitoring [ARGS="--rounds 3 --duration 10"]

Two gunicorn services with deploy/gunicorn.conf.py run side by side on one database of their
own (gf_bench_monitoring, dropped at exit): "on" with everything a production host has
(PROMETHEUS_MULTIPROC_DIR, figures recorded per request, the own-store flush every
SELF_METRICS_INTERVAL seconds, a Prometheus scrape of /metrics every 5 s during the window);
"off" with SELF_METRICS=0 and SELF_METRICS_RECORDING=0. Phases alternate off, on, off, on …
with the same clients (bench/ingest.py's single-point workload), so both see the same machine;
the figure is the median ratio of on to off over the rounds. Target: at least 95%.
"""

from __future__ import annotations

import argparse
import http.client
import statistics
import sys
import tempfile
import threading
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parent.parent)

from bench import _common, ingest  # noqa: E402

DATABASE_NAME = "gf_bench_monitoring"
TARGET_RATIO = 0.95
SCRAPE_EVERY_SECONDS = 5.0


def _scraper(host: str, port: int, key: str, stop: threading.Event, sizes: list[int]) -> None:
    while not stop.wait(SCRAPE_EVERY_SECONDS):
        conn = http.client.HTTPConnection(host, port, timeout=30)
        conn.request("GET", "/metrics", headers={"Authorization": f"Bearer {key}"})
        response = conn.getresponse()
        body = response.read()
        conn.close()
        if response.status != 200:
            raise SystemExit(f"bench: /metrics answered {response.status}: {body[:300]!r}")
        sizes.append(len(body))


def run_phase(address: tuple[str, int], key: str, args: argparse.Namespace, *, scrape: bool):
    window = ingest._window(args.warmup, args.duration)
    stop = threading.Event()
    sizes: list[int] = []
    scraper = threading.Thread(target=_scraper, args=(*address, key, stop, sizes))
    if scrape:
        scraper.start()
    try:
        tally = ingest.run_single(*address, "/api/metrics/counter", key, args.connections, window)
    finally:
        stop.set()
        if scrape:
            scraper.join()
    ingest._check("single counters", tally)
    return tally.done / args.duration, _common.percentile(tally.latencies_ms, 95), sizes


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=16, help="client connections")
    parser.add_argument("--workers", type=int, default=4, help="gunicorn workers per service")
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per phase")
    parser.add_argument("--warmup", type=float, default=3.0, help="warm-up seconds per phase")
    parser.add_argument("--rounds", type=int, default=3, help="off/on pairs; medians reported")
    args = parser.parse_args(argv)

    database_url = _common.required_env("DATABASE_URL")
    redis_url = _common.required_env("REDIS_URL")
    setup_env = _common.service_env(database_url, redis_url)
    with (
        _common.scratch_database(database_url, DATABASE_NAME, setup_env) as bench_url,
        tempfile.TemporaryDirectory(prefix="gf-bench-prometheus-") as multiproc_dir,
    ):
        base = _common.service_env(bench_url, redis_url)
        base.pop("PROMETHEUS_MULTIPROC_DIR", None)
        on_env = {**base, "PROMETHEUS_MULTIPROC_DIR": multiproc_dir, "SELF_METRICS": "true"}
        off_env = {**base, "SELF_METRICS": "false", "SELF_METRICS_RECORDING": "false"}
        key = _common.api_key_create(base, name="bench-monitoring", rate_limit=10_000_000)
        machine = _common.machine_summary(bench_url)
        results: dict[str, list[tuple[float, float]]] = {"off": [], "on": []}
        scrape_sizes: list[int] = []
        with (
            _common.gunicorn(on_env, workers=args.workers) as on_address,
            _common.gunicorn(off_env, workers=args.workers) as off_address,
        ):
            for n in range(args.rounds):
                for label, address in (("off", off_address), ("on", on_address)):
                    _common.log(f"round {n + 1}/{args.rounds}: self-monitoring {label}")
                    rate, p95, sizes = run_phase(address, key, args, scrape=label == "on")
                    results[label].append((rate, p95))
                    scrape_sizes += sizes
            own_points = _own_points(on_address, key)

    ratios = [on[0] / off[0] for on, off in zip(results["on"], results["off"], strict=True)]
    ratio = statistics.median(ratios)
    med = {label: statistics.median(r[0] for r in rows) for label, rows in results.items()}
    p95 = {label: statistics.median(r[1] for r in rows) for label, rows in results.items()}
    lines = [
        f"machine:  {machine}",
        f"service:  gunicorn, {args.workers} sync workers each, deploy/gunicorn.conf.py, DEBUG off",
        f"load:     {args.connections} connections of single counters, {args.warmup:g} s warm-up "
        f"+ {args.duration:g} s measured per phase; {args.rounds} off/on pair(s), medians",
        "",
        f"off (SELF_METRICS=0, recording off)  {med['off']:>8,.0f} req/s   p95 {p95['off']:.1f} ms",
        f"on  (recording, flush, scrapes)      {med['on']:>8,.0f} req/s   p95 {p95['on']:.1f} ms",
        f"    on/off = {ratio:.1%} (pairs: {', '.join(f'{r:.1%}' for r in ratios)})   "
        f"target ≥ {TARGET_RATIO:.0%}: {'met' if ratio >= TARGET_RATIO else 'MISSED'}",
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
