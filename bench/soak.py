"""The soak test: the load test's mix at the target rate for a long time, and what it leaves behind.

    make soak [DURATION=30m] [RATE=10000] [ARGS=...]
    python -m bench.soak --duration 30m     # with DATABASE_URL and REDIS_URL set

The stack of bench/loadtest.py (bench/_stack.py: gunicorn with deploy/gunicorn.conf.py, a Celery
worker and beat, a database of its own), except that gunicorn does not recycle its workers (`--max-requests 0`):
recycling would hide the growth this test looks for. Locust's users are paced to offer --rate
writes a minute (default 10,000, the target) with metric names unique to the run. Every
--sample seconds the script records the resident memory (RSS) of each process of the stack and
the number of PostgreSQL connections to the run's database. When the load stops it waits up to
--settle seconds for the queue to drain, then checks:

- rate: the writes a minute held are at least 95% of those offered;
- no 5xx, and no failed request of any other kind;
- RSS: each process's RSS at the end grew less than --max-rss-growth percent (default 10) over
  its RSS once the warm-up (the first --warmup percent of the run, default 20) was over; every
  process of the stack is still the one it started with;
- connections: in the last window as long as the warm-up, their median count is no higher
  than during the warm-up, and never above one per process that runs Django;
- drain: no ingest batch pending or running after the settle period, none failed;
- ledger: for every metric of the run, the points stored in metric_points equal the points the
  service acknowledged (201 or 202) to locust: each acknowledged point stored exactly once.

Figures and one verdict line are printed; the exit status is 0 on PASS, 1 on FAIL.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

import psutil

from bench import _common, _locust
from bench._options import duration
from bench._stack import Stack, log, machine_line, running_stack


@dataclass
class Sample:
    at: float  # seconds since the load started
    rss: dict[int, int]  # pid -> bytes
    connections: int


@dataclass
class Sampler:
    """Samples RSS of the stack's processes and the database's connections in a thread."""

    stack: Stack
    every: float
    # time.time() that samples count from: the sampler's start until `rebase` moves it to the
    # load's (locust takes seconds to start on a busy machine).
    started: float = field(default_factory=time.time)
    samples: list[Sample] = field(default_factory=list)
    roles: dict[int, str] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)

    def processes(self) -> list[psutil.Process]:
        found = []
        for name, popen in self.stack.processes.items():
            try:
                parent = psutil.Process(popen.pid)
                children = parent.children(recursive=True)
            except psutil.Error:
                continue
            self.roles.setdefault(parent.pid, f"{name} (main)")
            for index, child in enumerate(sorted(children, key=lambda p: p.pid)):
                self.roles.setdefault(child.pid, f"{name} child {index + 1}")
            found += [parent, *children]
        return found

    def sample(self, conn) -> Sample:
        rss = {}
        for process in self.processes():
            try:
                rss[process.pid] = process.memory_info().rss
            except psutil.Error:
                continue
        (connections,) = conn.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchone()
        sample = Sample(time.time() - self.started, rss, connections)
        self.samples.append(sample)
        return sample

    def run(self) -> None:
        import psycopg

        with psycopg.connect(self.stack.database_url, autocommit=True) as conn:
            while not self._stop.is_set():
                self.sample(conn)
                self._stop.wait(self.every)

    def rebase(self, load_started: float) -> None:
        """Count the samples' times from `load_started` (a time.time()), and drop those taken
        before it: the warm-up is the first part of the load, not of locust's start-up."""
        shift = self.started - load_started
        self.samples = [
            Sample(s.at + shift, s.rss, s.connections) for s in self.samples if s.at + shift >= 0
        ]
        self.started = load_started

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.run, daemon=True)
        thread.start()
        return thread

    def stop(self, thread: threading.Thread) -> None:
        self._stop.set()
        thread.join(30)


def drain(database_url: str, settle: float) -> tuple[float, Counter[str]]:
    """Wait until no batch is pending or running, up to `settle` seconds; (seconds, states)."""
    started = time.monotonic()
    while True:
        states = _common.queue_state(database_url)
        if not any(states[s] for s in _common.OPEN_STATES) or time.monotonic() - started > settle:
            return time.monotonic() - started, states
        time.sleep(0.5)


def stored_points(database_url: str, prefix: str) -> Counter[str]:
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT m.name, count(*) FROM metric_points p JOIN metrics m ON m.id = p.metric_id"
            " WHERE starts_with(m.name, %s) GROUP BY 1",
            [prefix],
        ).fetchall()
    return Counter(dict(rows))


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


def memory_checks(sampler: Sampler, warmup_end: float, max_growth: float) -> list[Check]:
    after = [s for s in sampler.samples if s.at >= warmup_end]
    if len(after) < 2:
        return [Check("rss", False, "fewer than two samples after the warm-up")]
    base, last = after[0], after[-1]
    checks = []
    lines = []
    worst = 0.0
    for pid in sorted(base.rss, key=lambda p: sampler.roles.get(p, "")):
        role = sampler.roles.get(pid, str(pid))
        if pid not in last.rss:
            checks.append(Check("rss", False, f"{role} (pid {pid}) exited during the run"))
            continue
        growth = (last.rss[pid] - base.rss[pid]) / base.rss[pid] * 100
        worst = max(worst, growth)
        lines.append(
            f"  {role:<18} pid {pid:>7}: {base.rss[pid] / 2**20:6.1f} MiB at "
            f"{base.at:.0f} s -> {last.rss[pid] / 2**20:6.1f} MiB at {last.at:.0f} s "
            f"({growth:+.1f}%)"
        )
    new = sorted(set(last.rss) - set(base.rss))
    if new:
        roles = ", ".join(f"{sampler.roles.get(p, p)} (pid {p})" for p in new)
        checks.append(Check("rss", False, f"processes started after the warm-up: {roles}"))
    print("resident memory after the warm-up, per process:\n" + "\n".join(lines), flush=True)
    checks.append(
        Check(
            "rss",
            worst < max_growth,
            f"largest RSS growth {worst:+.1f}% (limit < {max_growth:g}%)",
        )
    )
    return checks


def connection_check(sampler: Sampler, warmup_end: float, duration: float) -> Check:
    """Flat: in the last window (as long as the warm-up) the median count is no higher than in
    the warm-up, and no sample exceeds one connection per process that runs Django (all but
    gunicorn's master). Tasks open and close connections, so single samples vary by one or two;
    a leak raises the level, or passes the per-process bound."""
    during = [s.connections for s in sampler.samples if s.at < warmup_end]
    last = [s.connections for s in sampler.samples if s.at >= duration - warmup_end]
    if not during or not last:
        return Check("connections", False, "no samples in the warm-up or the last window")
    bound = max(len(s.rss) for s in sampler.samples) - 1
    ok = statistics.median(last) <= statistics.median(during) and max(last) <= bound
    return Check(
        "connections",
        ok,
        f"PostgreSQL connections to the run's database: {min(during)}-{max(during)} (median "
        f"{statistics.median(during):g}) in the warm-up, {min(last)}-{max(last)} (median "
        f"{statistics.median(last):g}) in the last {warmup_end:.0f} s (limits: median at most "
        f"{statistics.median(during):g}, at most {bound} at any time)",
    )


def ledger_check(acknowledged: Counter[str], stored: Counter[str]) -> Check:
    names = sorted(set(acknowledged) | set(stored))
    wrong = [f"{n}: {acknowledged[n]:,} acknowledged, {stored[n]:,} stored" for n in names if acknowledged[n] != stored[n]]  # fmt: skip
    total_ack, total_stored = sum(acknowledged.values()), sum(stored.values())
    detail = (
        f"{total_ack:,} points acknowledged, {total_stored:,} stored, over {len(names)} metrics"
    )
    if wrong:
        detail += "; differ: " + "; ".join(wrong)
    return Check("ledger", not wrong and total_ack > 0, detail)


def run(args: argparse.Namespace) -> int:
    prefix = f"soak_{uuid.uuid4().hex[:8]}."
    with running_stack("soak", gunicorn_args=["--max-requests", "0"]) as stack:
        log(machine_line(stack.database_url))
        log(
            f"{args.users} users offering {args.rate:,.0f} writes/min for {args.duration} s "
            f"against {stack.base_url}; metrics {prefix}*"
        )
        sampler = Sampler(stack, args.sample)
        thread = sampler.start()
        locust = _locust.locust_run(
            stack,
            users=args.users,
            writes_per_minute=args.rate,
            duration=args.duration,
            prefix=prefix,
            background=True,
        )
        result = _locust.locust_result(stack, locust, timeout=args.duration + 120)
        sampler.stop(thread)
        sampler.rebase(result.run_started)
        stack.check_alive()
        drain_seconds, states = drain(stack.database_url, args.settle)
        stored = stored_points(stack.database_url, prefix)
        stack.check_alive()
    _locust.print_figures(result)
    warmup_end = args.duration * args.warmup / 100
    checks = [
        Check(
            "rate",
            result.writes_per_minute >= 0.95 * args.rate,
            f"{result.writes_per_minute:,.0f} writes/min held (limit: at least 95% of the "
            f"{args.rate:,.0f} offered)",
        ),
        Check(
            "errors",
            result.server_errors == 0 and result.failed == 0,
            f"{result.server_errors} 5xx, {result.failed} failed requests (target 0)",
        ),
        *memory_checks(sampler, warmup_end, args.max_rss_growth),
        connection_check(sampler, warmup_end, args.duration),
        Check(
            "drain",
            not any(states[s] for s in _common.OPEN_STATES) and not states["failed"],
            f"queue drained {drain_seconds:.1f} s after the load stopped; batches by state: "
            + ", ".join(f"{s} {n:,}" for s, n in sorted(states.items())),
        ),
        ledger_check(result.acknowledged, stored),
    ]
    for check in checks:
        print(f"{check.name}: {'ok' if check.ok else 'FAILED'}: {check.detail}", flush=True)
    ok = all(check.ok for check in checks)
    failed = ", ".join(sorted({c.name for c in checks if not c.ok}))
    print(
        f"verdict: {'PASS' if ok else 'FAIL'}: {args.duration} s at "
        f"{result.writes_per_minute:,.0f} writes/min ({result.points_per_minute:,.0f} "
        f"points/min), p95 {result.write_percentile(95):.0f} ms"
        + (
            f"; failed: {failed}"
            if failed
            else "; rate, errors, memory, connections, drain, ledger ok"
        ),
        flush=True,
    )
    return 0 if ok else 1


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--duration", type=duration, default=1800, help="default 30m")
    p.add_argument("--users", type=int, default=60)
    p.add_argument("--rate", type=float, default=_locust.TARGET_WRITES_PER_MINUTE)
    p.add_argument("--warmup", type=float, default=20, help="percent of the run (default 20)")
    p.add_argument("--max-rss-growth", type=float, default=10, help="percent (default 10)")
    p.add_argument("--sample", type=float, default=5, help="seconds between samples")
    p.add_argument("--settle", type=float, default=120, help="seconds to wait for the drain")
    return p


if __name__ == "__main__":
    sys.exit(run(parser().parse_args(sys.argv[1:])))
