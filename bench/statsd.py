"""StatsD lines per second one `manage.py statsd` process stores without loss, 1-second flushes.

    make bench-statsd                                 # or, with DATABASE_URL and REDIS_URL set:
    python -m bench.statsd --seconds 10 --rates 10000,20000,40000,80000,160000

Starts the real server (STATSD_FLUSH_SECONDS=1) on a free loopback port and a database of its
own (gf_bench_statsd, dropped at exit), then, for each rate in turn, sends that many lines per
second for --seconds, packed into datagrams of about --datagram bytes as buffering clients do
(the datadog client's default is 1432 bytes over UDP). Each step has its own names, so what got
stored is counted exactly afterwards with SQL:

  counters   `c` lines, value 1, over --series series (names x tag sets): the stored sum is the number of
             lines that arrived (the server pre-sums them, one point per series and flush);
  timers     `ms` lines over the same series: every line is a point, so this also measures the
             write path at the same rate.

A rate is sustained when every line sent is stored and no flush took longer than its 1-second
interval (a slower flush means a backlog that grows until the socket's buffer overflows); the
script waits for the backlog to be written before counting. The kernel's UDP receive-buffer drop
counter (/proc/net/snmp, RcvbufErrors) is printed beside it: lines lost there never reached the
process. The sender runs in this process and paces itself every 5 ms.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from bench import _common

DATABASE_NAME = "gf_bench_statsd"
TICK = 0.005


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def udp_receive_errors() -> int:
    """The kernel's count of UDP datagrams dropped for a full receive buffer (all sockets)."""
    lines = Path("/proc/net/snmp").read_text().splitlines()
    udp = [line.split() for line in lines if line.startswith("Udp:")]
    header, values = udp[0], udp[1]
    return int(values[header.index("RcvbufErrors")])


@contextlib.contextmanager
def statsd_server(env: dict[str, str], port: int) -> Iterator[Path]:
    log_path = Path(tempfile.mkdtemp(prefix="gf-bench-statsd-")) / "statsd.log"
    env = {**env, "STATSD_BIND": f"127.0.0.1:{port}", "STATSD_FLUSH_SECONDS": "1"}
    with log_path.open("w") as log_file:
        process = subprocess.Popen(
            [sys.executable, str(_common.ROOT / "manage.py"), "statsd"],
            env=env,
            cwd=_common.ROOT,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while "statsd listening" not in log_path.read_text():
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"bench: statsd did not start:\n{log_path.read_text()}")
            time.sleep(0.05)
        yield log_path
    finally:
        process.terminate()
        process.wait(60)


def datagrams(prefix: str, kind: str, series: int, size: int) -> list[bytes]:
    """One datagram per group of lines, cycling over the step's series; together one cycle."""
    lines = [f"{prefix}.m{i // 10}:1|{kind}|#shard:{i % 10}".encode() for i in range(series)]
    out, chunk, length = [], [], 0
    for line in lines:
        if chunk and length + len(line) + 1 > size:
            out.append(b"\n".join(chunk))
            chunk, length = [], 0
        chunk.append(line)
        length += len(line) + 1
    if chunk:
        out.append(b"\n".join(chunk))
    return out


def send(port: int, packets: list[bytes], rate: float, seconds: float) -> int:
    """Send `rate` lines per second for `seconds`; return the number of lines sent."""
    counts = [packet.count(b"\n") + 1 for packet in packets]
    sent = 0
    index = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 1024 * 1024)
        started = time.perf_counter()
        while True:
            elapsed = time.perf_counter() - started
            if elapsed >= seconds:
                break
            due = int(rate * elapsed)
            while sent < due:
                sock.sendto(packets[index], ("127.0.0.1", port))
                sent += counts[index]
                index = (index + 1) % len(packets)
            time.sleep(TICK)
    return sent


def stored(database_url: str, prefix: str, kind: str) -> int:
    import psycopg

    aggregate = "sum(p.value)" if kind == "c" else "count(*)"
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            f"SELECT coalesce({aggregate}, 0) FROM metric_points p "
            "JOIN metrics m ON m.id = p.metric_id WHERE m.name LIKE %s",
            [prefix + ".%"],
        ).fetchone()
    return int(row[0])


def settle(log_path: Path, since: int) -> None:
    """Wait until the backlog is written: no flush logged for 3 s and for 3x the slowest one.

    A flush that received nothing logs nothing at INFO, so silence means the server is idle."""
    count, quiet_since = -1, time.monotonic()
    while True:
        flushes, slowest = flush_figures(log_path, since)
        if flushes != count:
            count, quiet_since = flushes, time.monotonic()
        if time.monotonic() - quiet_since > max(3.0, 3 * slowest / 1000):
            return
        time.sleep(0.25)


def flush_figures(log_path: Path, since: int) -> tuple[int, float]:
    """Flushes logged after line `since` and the slowest one's duration in ms."""
    flushes = []
    for line in log_path.read_text().splitlines()[since:]:
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if record.get("message") == "statsd flush":
                flushes.append(record["duration_ms"])
    return len(flushes), max(flushes, default=0.0)


def sustained(sent: int, got: int, slowest_ms: float) -> bool:
    """Nothing lost, and no flush took longer than the 1-second interval (no growing backlog)."""
    return got == sent and slowest_ms <= 1000


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="per step")
    parser.add_argument("--rates", default="10000,20000,40000,80000,160000,320000")
    parser.add_argument("--series", type=int, default=1000, help="distinct series per step")
    parser.add_argument("--datagram", type=int, default=1432, help="bytes per datagram, at most")
    parser.add_argument("--kinds", default="c,ms", help="c (counters) and/or ms (timers)")
    parser.add_argument(
        "--max-samples",
        type=int,
        default=1_000_000,
        help="STATSD_MAX_SAMPLES_PER_FLUSH (default 100,000 in the service would cap timers)",
    )
    args = parser.parse_args(argv)
    rates = [int(r) for r in args.rates.split(",")]

    database_url = _common.required_env("DATABASE_URL")
    redis_url = _common.required_env("REDIS_URL")
    setup_env = _common.service_env(database_url, redis_url)
    with _common.scratch_database(database_url, DATABASE_NAME, setup_env) as bench_url:
        env = _common.service_env(
            bench_url,
            redis_url,
            LOG_LEVEL="INFO",
            STATSD_MAX_SAMPLES_PER_FLUSH=str(args.max_samples),
        )
        machine = _common.machine_summary(bench_url)
        port = free_udp_port()
        results = []
        with statsd_server(env, port) as log_path:
            for kind in args.kinds.split(","):
                for rate in rates:
                    prefix = f"bench.{kind}{rate}"
                    packets = datagrams(prefix, kind, args.series, args.datagram)
                    log_lines = len(log_path.read_text().splitlines())
                    drops_before = udp_receive_errors()
                    sent = send(port, packets, rate, args.seconds)
                    settle(log_path, log_lines)
                    got = stored(bench_url, prefix, kind)
                    kernel_drops = udp_receive_errors() - drops_before
                    flushes, slowest = flush_figures(log_path, log_lines)
                    results.append((kind, rate, sent, got, kernel_drops, flushes, slowest))
                    lost = sent - got
                    _common.log(
                        f"{kind:>2} {rate:>7,} lines/s: sent {sent:,}, stored {got:,}, "
                        f"lost {lost:,} ({lost / sent:.2%}), kernel buffer drops {kernel_drops:,}, "
                        f"{flushes} flushes, slowest {slowest:.0f} ms"
                    )
                    if lost > sent * 0.05 or slowest > 5000:
                        break  # past saturation: higher rates only lose or lag more

    print(f"machine: {machine}")
    print(
        f"per step: {args.seconds:g} s, {args.series} series, datagrams ≤ {args.datagram} bytes, "
        f"flush every 1 s, STATSD_MAX_SAMPLES_PER_FLUSH={args.max_samples:,}"
    )
    print(
        f"{'type':<5} {'rate/s':>8} {'sent':>10} {'stored':>10} {'lost':>8} "
        f"{'kernel drops':>12} {'slowest flush':>14}  keeps up"
    )
    for kind, rate, sent, got, drops, _, slowest in results:
        print(
            f"{kind:<5} {rate:>8,} {sent:>10,} {got:>10,} {sent - got:>8,} {drops:>12,} "
            f"{slowest:>11.0f} ms  {'yes' if sustained(sent, got, slowest) else 'no'}"
        )
    for kind in args.kinds.split(","):
        ok = [
            rate
            for k, rate, sent, got, _, _, slow in results
            if k == kind and sustained(sent, got, slow)
        ]
        print(
            f"{kind}: highest rate stored without loss, every flush done within its second: "
            f"{max(ok, default=0):,} lines/s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
