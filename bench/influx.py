"""Line-protocol throughput over HTTP, beside the JSON batch endpoint in the same run.

    make bench-influx                         # or, with DATABASE_URL and REDIS_URL set:
    python -m bench.influx --rounds 3        # medians of three rounds

One round measures, against the same gunicorn service, the same points sent three ways:

  (1) line protocol: POST /api/v2/write, 10,000 points per request (2,000 lines of 5 fields,
      Telegraf's shape: one measurement, two tags, one timestamp per line), --clients threads;
  (2) line protocol, gzipped (Telegraf's default): the same bodies with Content-Encoding: gzip;
  (3) JSON: POST /api/metrics/batch, the same 10,000 points as ten 1000-point batches (the
      endpoint's maximum), from the same number of threads.

and prints points/s of each, and the service's CPU per 10,000 points (its gunicorn processes and
their PostgreSQL backends, from /proc: unlike throughput, barely moved by other load on a shared
machine), with the ratios (1)/(3) and (2)/(3). Round n starts with phase n (mod
3), so with three rounds each figure is measured once first, once second and once last. Everything runs against a
database of its own (gf_bench_influx, dropped at exit) on the server named by DATABASE_URL, and
the service under gunicorn with deploy/gunicorn.conf.py, DEBUG off. Bodies are encoded before the
clock starts; each phase is a fixed warm-up followed by a fixed measured window.
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import json
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from bench import _common, _options, _runners, _servers
from bench._tallies import Tally, Window, merge, tally_check

DATABASE_NAME = "gf_bench_influx"
LINES = 2000
FIELDS = ("usage_user", "usage_system", "usage_idle", "usage_iowait", "load")
POINTS = LINES * len(FIELDS)  # 10,000: the most one line-protocol request may carry
JSON_BATCH = 1000
CPUS = 10
VARIANTS = 2


# --- workload --------------------------------------------------------------------------------


def _rows(client: int, variant: int, now: float) -> list[tuple[dict[str, str], float, list]]:
    """(tags, Unix time, [(field, value)]) per line: 50 series per client, times over 5 s."""
    rows = []
    for n in range(LINES):
        tags = {"cpu": f"cpu{n % CPUS}", "host": f"host-{client}"}
        when = round(now - (n % 50) * 0.1 - variant * 0.01, 3)
        values = [(f, float((n * 7 + i * 13 + variant) % 97) + 0.5) for i, f in enumerate(FIELDS)]
        rows.append((tags, when, values))
    return rows


def line_protocol_body(rows: list) -> bytes:
    lines = []
    for tags, when, values in rows:
        tag_text = ",".join(f"{k}={v}" for k, v in sorted(tags.items()))
        fields = ",".join(f"{f}={v!r}" for f, v in values)
        lines.append(f"bench_cpu,{tag_text} {fields} {round(when * 1000)}")
    return ("\n".join(lines) + "\n").encode()


def json_bodies(rows: list) -> list[bytes]:
    points = [
        {"type": "value", "name": f"bench_cpu.{f}", "value": v, "timestamp": when, "tags": tags}
        for tags, when, values in rows
        for f, v in values
    ]
    return [
        json.dumps({"points": points[i : i + JSON_BATCH]}).encode()
        for i in range(0, len(points), JSON_BATCH)
    ]


# --- clients ---------------------------------------------------------------------------------


def _client(
    host: str, port: int, requests: list[tuple[str, bytes, dict, int]], window: Window, tally: Tally
) -> None:
    conn = http.client.HTTPConnection(host, port, timeout=120)
    i = 0
    while time.time() < window.end:
        path, body, headers, points = requests[i % len(requests)]
        i += 1
        conn.request("POST", path, body, headers)
        response = conn.getresponse()
        payload = response.read()
        if not window.start <= time.time() <= window.end:
            continue
        if response.status in (201, 204):
            tally.done += points
        else:
            tally.errors += 1
            tally.first_error = tally.first_error or f"{response.status} {payload[:300]!r}"
    conn.close()


def run_phase(
    host: str,
    port: int,
    per_client: list[list],
    warmup: float,
    duration: float,
    cpu: Callable[[], float],
) -> tuple[Tally, float]:
    """Run the clients; the tally of the measured window, and the service's CPU seconds in it."""
    start = time.time() + warmup
    window = Window(start, start + duration)
    tallies = [Tally() for _ in per_client]
    threads = [
        threading.Thread(target=_client, args=(host, port, requests, window, tally))
        for requests, tally in zip(per_client, tallies, strict=True)
    ]
    for thread in threads:
        thread.start()
    time.sleep(max(0.0, window.start - time.time()))
    cpu_start = cpu()
    time.sleep(max(0.0, window.end - time.time()))
    cpu_used = cpu() - cpu_start
    for thread in threads:
        thread.join()
    return merge(tallies), cpu_used


# --- the service's CPU, from /proc -----------------------------------------------------------


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of a process; 0 once it is gone."""
    stat = _common.process_stat(pid)
    return stat.cpu_seconds if stat else 0.0


def _gunicorn_pids(port: int) -> list[int]:
    """The gunicorn master bound to `port` and its workers."""
    master = None
    parents: dict[int, int] = {}
    for pid in _common.process_ids():
        stat, command = _common.process_stat(pid), _common.process_command(pid)
        if stat is None or command is None:
            continue
        parents[pid] = stat.parent
        arguments = command.split(b"\0")
        if b"gunicorn" in arguments and f"127.0.0.1:{port}".encode() in arguments:
            master = master or pid
    if master is None:
        raise SystemExit(f"bench: no gunicorn process found for port {port}")
    return [master, *(pid for pid, parent in parents.items() if parent == master)]


def _backend_pids(database_url: str) -> list[int]:
    """The PostgreSQL backends connected to the benchmark's database (one per worker)."""
    import psycopg

    name = database_url.rsplit("/", 1)[1].split("?", 1)[0]
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            [name],
        ).fetchall()
    return [pid for (pid,) in rows]


def service_cpu(port: int, database_url: str) -> Callable[[], float]:
    """A clock of the CPU seconds used by the service: its gunicorn processes and their
    PostgreSQL backends (other processes on the machine, busy or not, do not count)."""

    def sample() -> float:
        pids = _gunicorn_pids(port) + _backend_pids(database_url)
        return sum(_cpu_seconds(pid) for pid in pids)

    return sample


# --- rounds and report -----------------------------------------------------------------------


@dataclass(frozen=True)
class Round:
    line_protocol: float  # points/s
    line_protocol_gzip: float
    json: float
    cpu_line_protocol: float  # service CPU milliseconds per 10,000 points
    cpu_line_protocol_gzip: float
    cpu_json: float


def run_round(args: argparse.Namespace, env: dict, key: str, round_number: int) -> Round:
    now = time.time()
    rows = [[_rows(c, v, now) for v in range(VARIANTS)] for c in range(args.clients)]
    auth = {"Authorization": f"Token {key}"}
    text = {**auth, "Content-Type": "text/plain; charset=utf-8"}
    packed = {**text, "Content-Encoding": "gzip"}
    path = "/api/v2/write?org=bench&bucket=bench&precision=ms"
    plain = [[(path, line_protocol_body(r), text, POINTS) for r in client] for client in rows]
    zipped = [[(p, gzip.compress(b), packed, n) for p, b, _, n in client] for client in plain]
    batch_headers = {**auth, "Content-Type": "application/json"}
    batches = [
        [
            ("/api/metrics/batch", b, batch_headers, JSON_BATCH)
            for r in client
            for b in json_bodies(r)
        ]
        for client in rows
    ]
    _common.log(
        f"bodies: line protocol {len(plain[0][0][1]):,} bytes ({len(zipped[0][0][1]):,} gzipped)"
        f" per {POINTS:,} points; JSON {sum(len(b[1]) for b in batches[0][:10]):,} bytes"
    )
    phases = [
        ("(1) line protocol", plain),
        ("(2) line protocol, gzip", zipped),
        ("(3) JSON batches", batches),
    ]
    # Each round starts at another phase, so no figure always pays for going first or last.
    shift = round_number % len(phases)
    rates, cpus = {}, {}
    with _servers.gunicorn(env, workers=args.workers) as (host, port):
        cpu = service_cpu(port, env["DATABASE_URL"])
        for label, requests in phases[shift:] + phases[:shift]:
            _common.log(f"{label}, {args.clients} client threads")
            tally, cpu_used = run_phase(host, port, requests, args.warmup, args.duration, cpu)
            tally_check(label, tally)
            rates[label] = tally.done / args.duration
            cpus[label] = cpu_used * 1000 * POINTS / tally.done
    lp, lpz, js = (rates[label] for label, _ in phases)
    clp, clpz, cjs = (cpus[label] for label, _ in phases)
    return Round(lp, lpz, js, clp, clpz, cjs)


def report(args: argparse.Namespace, machine: str, rounds: list[Round]) -> None:
    def med(attr: str) -> float:
        return _runners.median(rounds, attr)

    lp, lpz, js = med("line_protocol"), med("line_protocol_gzip"), med("json")
    clp, clpz, cjs = med("cpu_line_protocol"), med("cpu_line_protocol_gzip"), med("cpu_json")
    lines = [
        f"machine:  {machine}",
        f"service:  gunicorn, {args.workers} sync workers, deploy/gunicorn.conf.py, DEBUG off",
        f"load:     {args.clients} client threads, {args.warmup:g} s warm-up + "
        f"{args.duration:g} s measured per phase; median of {len(rounds)} round(s)",
        "",
        "                                                throughput   service CPU / 10,000 points",
        f"(1) line protocol, 10,000 points/request     {lp:>10,.0f} points/s   {clp:>6,.0f} ms",
        f"(2) line protocol gzipped, same requests     {lpz:>10,.0f} points/s   {clpz:>6,.0f} ms",
        f"(3) JSON batches of 1000, same points        {js:>10,.0f} points/s   {cjs:>6,.0f} ms",
        f"    throughput (1)/(3) = {lp / js:.2f}   (2)/(3) = {lpz / js:.2f};   "
        f"CPU (1)/(3) = {clp / cjs:.2f}   (2)/(3) = {clpz / cjs:.2f}",
    ]
    lines += _runners.round_lines(
        rounds,
        lambda r: (
            f"(1) {r.line_protocol:,.0f} points/s {r.cpu_line_protocol:,.0f} ms  "
            f"(2) {r.line_protocol_gzip:,.0f} points/s {r.cpu_line_protocol_gzip:,.0f} ms  "
            f"(3) {r.json:,.0f} points/s {r.cpu_json:,.0f} ms"
        ),
    )
    print("\n".join(lines), flush=True)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    _options.round_options(parser, clients=2, clients_help="client threads")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    with _runners.scratch(DATABASE_NAME, key_name="bench-influx") as run:
        rounds = _runners.rounds_run(args.rounds, lambda n: run_round(args, run.env, run.key, n))
    report(args, run.machine, rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
