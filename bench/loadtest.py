"""The load test: locustfile.py against gunicorn and a Celery worker, with a verdict on the target.

    make loadtest [DURATION=2m] [USERS=60] [RATE=11000] [ARGS=...]
    make loadtest-step                      # the highest write rate that keeps p95 under 200 ms
    python bench/loadtest.py --duration 2m  # with DATABASE_URL and REDIS_URL set

The service's target: 10,000 writes a minute with a p95 latency under 200 ms. A write is one
ingest request (a single counter or value, or a batch, synchronous or `Prefer: respond-async`),
whatever its number of points; the points a minute are printed beside it.

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
import contextlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

# Run as a script, Python puts bench/ first on sys.path; the repository root takes its place.
if __name__ == "__main__":
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from bench import _common

ROOT = _common.ROOT
LOCUSTFILE = ROOT / "locustfile.py"
WRITE_ROUTES = {
    ("POST", "/api/metrics/counter"),
    ("POST", "/api/metrics/value"),
    ("POST", "/api/metrics/batch"),
    ("POST", "/api/metrics/batch (async)"),
}
# The task weights of locustfile.MetricsHost: 18 write tasks (10 + 6 + 1 + 1) in 19.
WRITE_SHARE = 18 / 19
TARGET_WRITES_PER_MINUTE = 10_000
TARGET_P95_MS = 200.0
START_SECONDS = 60


def log(message: str) -> None:
    print(f"[loadtest] {message}", file=sys.stderr, flush=True)


def seconds(text: str) -> int:
    """A duration as locust writes it: 90, 90s, 2m, 1h30m."""
    if text.isdigit():
        return int(text)
    parts = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", text)
    if not parts or not any(parts.groups()):
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 90, 90s, 2m, 1h30m)")
    hours, minutes, secs = (int(g or 0) for g in parts.groups())
    return hours * 3600 + minutes * 60 + secs


# --- the stack ----------------------------------------------------------------------------------


@dataclass
class Stack:
    """gunicorn, a Celery worker and beat on a database of their own; what locust is pointed at."""

    env: dict[str, str]
    database_url: str
    base_url: str
    api_key: str
    workdir: Path
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    def check_alive(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise SystemExit(
                    f"loadtest: {name} exited with {process.returncode}:\n"
                    + _tail(self.workdir / f"{name}.log")
                )

    def logs(self) -> str:
        return "\n".join(
            f"--- {name} ---\n{_tail(self.workdir / f'{name}.log')}" for name in self.processes
        )


def _tail(path: Path, lines: int = 30) -> str:
    if not path.exists():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _start(stack: Stack, name: str, command: list[str], *, stdout_to_log: bool = True) -> None:
    log_file = (stack.workdir / f"{name}.log").open("w")
    # The web service logs every request on stdout (a JSON line); only its stderr is kept.
    stdout = log_file if stdout_to_log else subprocess.DEVNULL
    stack.processes[name] = subprocess.Popen(
        command, env=stack.env, cwd=ROOT, stdout=stdout, stderr=log_file, start_new_session=True
    )


def _stop(processes: Sequence[subprocess.Popen]) -> None:
    """A graceful stop (SIGTERM: gunicorn and Celery finish the request or task in hand), all
    at once; what is still running after 30 s is killed with its children."""
    for process in processes:
        if process.poll() is None:
            process.terminate()
    deadline = time.monotonic() + 30
    for process in processes:
        try:
            process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, 9)
            process.wait()


def _wait_for(predicate, what: str, stack: Stack) -> None:
    deadline = time.monotonic() + START_SECONDS
    while not predicate():
        stack.check_alive()
        if time.monotonic() > deadline:
            raise SystemExit(f"loadtest: timed out waiting for {what}\n{stack.logs()}")
        time.sleep(0.1)


def _healthy(base_url: str) -> bool:
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(base_url)
    try:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=2)
        conn.request("GET", "/healthz")
        return conn.getresponse().status == 200
    except OSError:
        return False


@contextlib.contextmanager
def running_stack(name: str, *, gunicorn_args: Sequence[str] = ()) -> Iterator[Stack]:
    """Start the stack on a fresh database `gf_<name>_<id>`; stop it and drop the database after."""
    database_url = _common.required_env("DATABASE_URL")
    redis_url = _common.required_env("REDIS_URL")
    run_id = uuid.uuid4().hex[:8]
    workdir = Path(tempfile.mkdtemp(prefix=f"gf-{name}-"))
    prometheus = workdir / "prometheus"
    prometheus.mkdir()
    env = _common.service_env(
        database_url,
        redis_url,
        CELERY_QUEUE=f"gf-{name}-{run_id}",
        PROMETHEUS_MULTIPROC_DIR=str(prometheus),
        PYTHONUNBUFFERED="1",
    )
    try:
        with _common.scratch_database(database_url, f"gf_{name}_{run_id}", env) as scratch_url:
            env["DATABASE_URL"] = scratch_url
            port = _common.free_port()
            stack = Stack(env, scratch_url, f"http://127.0.0.1:{port}", "", workdir)
            queue = env["CELERY_QUEUE"]
            celery = [sys.executable, "-m", "celery", "-A", "glowing_fiesta"]
            try:
                _start(
                    stack,
                    "gunicorn",
                    [sys.executable, "-m", "gunicorn", "-c", str(_common.GUNICORN_CONF),
                     "--bind", f"127.0.0.1:{port}", *gunicorn_args],
                    stdout_to_log=False,
                )  # fmt: skip
                _start(
                    stack,
                    "worker",
                    [*celery, "worker", "--pool", "prefork", "--concurrency", "2", "-Q", queue,
                     "-n", f"{queue}@%h", "--without-gossip", "--without-mingle",
                     "--without-heartbeat", "--loglevel", "INFO"],
                )  # fmt: skip
                _start(
                    stack,
                    "beat",
                    [*celery, "beat", "--loglevel", "WARNING",
                     "--schedule", str(workdir / "celerybeat-schedule")],
                )  # fmt: skip
                # While the processes boot.
                stack.api_key = _common.api_key_create(env, name=name, rate_limit=10_000_000)
                _wait_for(lambda: _healthy(stack.base_url), "gunicorn to answer /healthz", stack)
                worker_log = workdir / "worker.log"
                _wait_for(
                    lambda: " ready." in worker_log.read_text(errors="replace"),
                    "the Celery worker to be ready",
                    stack,
                )
                yield stack
            finally:
                _stop(list(stack.processes.values()))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


# --- locust -------------------------------------------------------------------------------------


@dataclass
class LoadResult:
    """What one locust run measured, from its stats file and the locustfile's report."""

    stats: list[dict]
    statuses: Counter[str]
    acknowledged: Counter[str]
    seconds: float
    returncode: int

    def _write_rows(self) -> list[dict]:
        return [row for row in self.stats if (row["method"], row["name"]) in WRITE_ROUTES]

    @property
    def writes(self) -> int:
        return sum(row["num_requests"] - row["num_failures"] for row in self._write_rows())

    @property
    def failed(self) -> int:
        return sum(row["num_failures"] for row in self.stats)

    @property
    def requests(self) -> int:
        return sum(row["num_requests"] for row in self.stats)

    @property
    def server_errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status.startswith("5"))

    @property
    def writes_per_minute(self) -> float:
        return self.writes / self.seconds * 60 if self.seconds else 0.0

    @property
    def points_per_minute(self) -> float:
        return sum(self.acknowledged.values()) / self.seconds * 60 if self.seconds else 0.0

    def write_percentile(self, q: float) -> float:
        return histogram_percentile(self._write_rows(), q)

    def route_percentile(self, method: str, name: str, q: float) -> float:
        rows = [r for r in self.stats if (r["method"], r["name"]) == (method, name)]
        return histogram_percentile(rows, q)


def histogram_percentile(rows: Sequence[dict], q: float) -> float:
    """The q-th percentile (nearest rank) of locust's response-time histograms, merged. Locust
    keeps times to the millisecond under 100 ms, to 10 ms under 1 s, to 100 ms above."""
    merged: Counter[int] = Counter()
    for row in rows:
        for ms, count in row["response_times"].items():
            merged[int(float(ms))] += count
    total = sum(merged.values())
    if not total:
        return math.nan
    rank = max(1, math.ceil(q / 100 * total))
    seen = 0
    for ms in sorted(merged):
        seen += merged[ms]
        if seen >= rank:
            return float(ms)
    return float(max(merged))


def tasks_per_second(writes_per_minute: float, users: int) -> float:
    """Each user's pace so that `users` together offer `writes_per_minute` writes."""
    return writes_per_minute / 60 / WRITE_SHARE / users


def locust_run(
    stack: Stack,
    *,
    users: int,
    writes_per_minute: float,
    duration: int,
    prefix: str = "",
    background: bool = False,
) -> subprocess.Popen | LoadResult:
    """Run locust headless for `duration` seconds; its summary goes to this process's stderr.
    With `background`, return the running process (read it with `locust_result`)."""
    tag = uuid.uuid4().hex[:8]
    command = [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--host", stack.base_url,
        "--headless", "--users", str(users), "--spawn-rate", str(users), "--run-time",
        f"{duration}s", "--stop-timeout", "10", "--only-summary",
    ]  # fmt: skip
    env = {
        **os.environ,
        "GF_API_KEY": stack.api_key,
        "GF_METRIC_PREFIX": prefix,
        "GF_TASKS_PER_SECOND": f"{tasks_per_second(writes_per_minute, users):.6f}",
        "GF_REPORT_FILE": str(stack.workdir / f"report-{tag}.json"),
    }
    process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=sys.stdout, stderr=sys.stdout)
    process.tag = tag  # type: ignore[attr-defined]
    if background:
        return process
    return locust_result(stack, process, timeout=duration + 60)


def locust_result(stack: Stack, process: subprocess.Popen, *, timeout: float) -> LoadResult:
    try:
        returncode = process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        raise SystemExit("loadtest: locust did not stop in time") from None
    tag = process.tag  # type: ignore[attr-defined]
    report_path = stack.workdir / f"report-{tag}.json"
    if not report_path.exists():
        raise SystemExit(f"loadtest: locust exited with {returncode} and wrote no figures")
    report = json.loads(report_path.read_text())
    stats = report["stats"]
    started = min((row["start_time"] for row in stats if row["num_requests"]), default=0)
    ended = max((row["last_request_timestamp"] or 0 for row in stats), default=0)
    return LoadResult(
        stats,
        Counter(report["statuses"]),
        Counter(report["acknowledged"]),
        max(0.0, ended - started),
        returncode,
    )


# --- figures and verdict --------------------------------------------------------------------------


def print_figures(result: LoadResult) -> None:
    print(
        f"duration {result.seconds:.0f} s; {result.requests:,} requests, {result.failed:,} failed; "
        f"HTTP statuses: " + ", ".join(f"{s} x {n:,}" for s, n in sorted(result.statuses.items())),
        flush=True,
    )
    print(
        f"writes: {result.writes:,} acknowledged, {result.writes_per_minute:,.0f} writes/min, "
        f"{result.points_per_minute:,.0f} points/min; latency p50 {result.write_percentile(50):.0f}"
        f" ms, p95 {result.write_percentile(95):.0f} ms, p99 {result.write_percentile(99):.0f} ms",
        flush=True,
    )
    for method, name in sorted({(r["method"], r["name"]) for r in result.stats}):
        rows = [r for r in result.stats if (r["method"], r["name"]) == (method, name)]
        count = sum(r["num_requests"] for r in rows)
        print(
            f"  {method} {name}: {count:,} requests, {count / max(result.seconds, 1e-9) * 60:,.0f}/min, "
            f"p50 {result.route_percentile(method, name, 50):.0f} ms, "
            f"p95 {result.route_percentile(method, name, 95):.0f} ms, "
            f"p99 {result.route_percentile(method, name, 99):.0f} ms",
            flush=True,
        )


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


def machine_line(database_url: str) -> str:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"machine: {_common.machine_summary(database_url)}; load average {load}"


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
    p.add_argument("--duration", type=seconds, default=120, help="e.g. 120, 90s, 2m (default 2m)")
    p.add_argument("--users", type=int, default=60, help="locust users (default 60)")
    p.add_argument("--rate", type=float, default=11_000, help="writes/min offered (default 11,000)")
    p.add_argument("--target-writes", type=float, default=TARGET_WRITES_PER_MINUTE)
    p.add_argument("--target-p95-ms", type=float, default=TARGET_P95_MS)
    p.add_argument("--step", action="store_true", help="search the highest rate meeting p95")
    p.add_argument("--step-users", type=int, default=20, help="users added per stage")
    p.add_argument("--user-rate", type=float, default=3.0, help="writes/s per user in a stage")
    p.add_argument("--max-users", type=int, default=400)
    p.add_argument("--stage-duration", type=seconds, default=45)
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    return run_steps(args) if args.step else run_once(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
