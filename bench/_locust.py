"""Locust headless against a Stack, and what it measured: the write requests of locustfile.py's
mix, their rate over the run time, their latency."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from bench._common import ROOT
from bench._stack import Stack

LOCUSTFILE = ROOT / "locustfile.py"
WRITE_ROUTES = {
    ("POST", "/api/metrics/counter"),
    ("POST", "/api/metrics/value"),
    ("POST", "/api/metrics/batch"),
    ("POST", "/api/metrics/batch (async)"),
}
# As the locustfile's report names them ("METHOD name").
WRITE_NAMES = {f"{method} {name}" for method, name in WRITE_ROUTES}
# The task weights of locustfile.MetricsHost: 18 write tasks (10 + 6 + 1 + 1) in 19.
WRITE_SHARE = 18 / 19
# The service's target: 10,000 writes a minute with a p95 latency under 200 ms.
TARGET_WRITES_PER_MINUTE = 10_000
TARGET_P95_MS = 200.0


@dataclass
class LoadResult:
    """What one locust run measured, from its stats file and the locustfile's report.

    The rates are those of the requests started within the run time (--run-time), over the run
    time: the requests the stop lets finish after it are counted (in `stats`, in the ledger's
    `acknowledged`) but do not stretch the time they are divided by.
    """

    stats: list[dict]
    statuses: Counter[str]
    acknowledged: Counter[str]  # points acknowledged (201 or 202) by metric, all of them
    seconds: float  # the run time
    returncode: int
    # Of the requests started within the run time: by "METHOD name", all and the failed ones;
    # the points acknowledged to them.
    started: Counter[str] = field(default_factory=Counter)
    started_failed: Counter[str] = field(default_factory=Counter)
    started_points: int = 0
    run_started: float = 0.0  # time.time() at which the run time began

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
    def writes_in_run(self) -> int:
        """Write requests started within the run time and acknowledged."""
        return sum(self.started[name] - self.started_failed[name] for name in WRITE_NAMES)

    @property
    def writes_per_minute(self) -> float:
        return self.writes_in_run / self.seconds * 60 if self.seconds else 0.0

    @property
    def points_per_minute(self) -> float:
        return self.started_points / self.seconds * 60 if self.seconds else 0.0

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
    in_run = report["in_run"]
    return LoadResult(
        report["stats"],
        Counter(report["statuses"]),
        Counter(report["acknowledged"]),
        float(in_run["run_time"]),
        returncode,
        started=Counter(in_run["requests"]),
        started_failed=Counter(in_run["failures"]),
        started_points=in_run["points"],
        run_started=in_run["started"],
    )


def print_figures(result: LoadResult) -> None:
    print(
        f"run time {result.seconds:.0f} s; {result.requests:,} requests "
        f"({sum(result.started.values()):,} started within the run time), {result.failed:,} failed; "
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
        per_minute = result.started[f"{method} {name}"] / max(result.seconds, 1e-9) * 60
        print(
            f"  {method} {name}: {count:,} requests, {per_minute:,.0f}/min, "
            f"p50 {result.route_percentile(method, name, 50):.0f} ms, "
            f"p95 {result.route_percentile(method, name, 95):.0f} ms, "
            f"p99 {result.route_percentile(method, name, 99):.0f} ms",
            flush=True,
        )
