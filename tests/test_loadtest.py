"""`make loadtest` and `make soak` for real, briefly: bench/loadtest.py and bench/soak.py start
gunicorn, a Celery worker and beat on a database of their own, run locust against them, print
their figures and a verdict, and exit 0 on PASS, 1 on FAIL.

Each run is short and light (about 20 writes a second; in the soak, from 12 users pacing one
task every 0.6 s, so that a busy machine's slower answers still leave them on pace), so the
targets given here are ones such a run meets, or cannot meet whatever the machine. The scripts' own defaults (two
and thirty minutes at 10,000 writes a minute) are run by hand; docs/TESTING.md has the figures.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from bench import loadtest, soak

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.gunicorn, pytest.mark.worker]


def _run(script: str, *args: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(  # noqa: S603 - our own interpreter and script
        [sys.executable, str(ROOT / "bench" / script), *args],
        env=dict(os.environ),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _figure(pattern: str, text: str) -> float:
    found = re.search(pattern, text)
    assert found, f"no match for {pattern!r} in:\n{text[-3000:]}"
    return float(found.group(1).replace(",", ""))


def test_loadtest_prints_the_summary_figures_and_a_passing_verdict():
    result = _run(
        "loadtest.py", "--duration", "6", "--users", "4", "--rate", "1200",
        "--target-writes", "600", "--target-p95-ms", "2000",
        timeout=90,
    )  # fmt: skip

    out = result.stdout
    assert result.returncode == 0, out[-3000:] + result.stderr[-3000:]
    # locust's own summary, then the script's figures and its verdict.
    assert "Aggregated" in out and "Response time percentiles" in out
    assert "POST     /api/metrics/batch (async)" in out
    writes = _figure(r"writes: [\d,]+ acknowledged, ([\d,]+) writes/min", out)
    points = _figure(r"writes/min, ([\d,]+) points/min", out)
    assert 600 <= writes <= 1800
    assert points > writes  # batches carry 100 points each
    assert _figure(r"latency p50 (\d+) ms", out) <= _figure(r"p95 (\d+) ms", out)
    verdict = out.strip().splitlines()[-1]
    assert verdict.startswith("verdict: PASS: "), verdict
    assert "(target >= 600)" in verdict and "0 5xx" in verdict


def test_loadtest_exits_1_when_the_target_is_out_of_reach():
    result = _run(
        "loadtest.py", "--duration", "2", "--users", "2", "--rate", "600",
        "--target-writes", "10000000",
        timeout=60,
    )  # fmt: skip

    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
    verdict = result.stdout.strip().splitlines()[-1]
    assert verdict.startswith("verdict: FAIL: "), verdict
    assert "(target >= 10,000,000)" in verdict


def test_soak_checks_memory_connections_drain_and_the_ledger():
    result = _run(
        "soak.py", "--duration", "15", "--users", "12", "--rate", "1200", "--sample", "1",
        "--settle", "30", "--max-rss-growth", "25",
        timeout=120,
    )  # fmt: skip

    out = result.stdout
    assert result.returncode == 0, out[-4000:] + result.stderr[-3000:]
    for check in ("rate", "errors", "rss", "connections", "drain", "ledger"):
        assert re.search(rf"^{check}: ok: ", out, re.M), (check, out[-3000:])
    # Every process of the stack is listed: gunicorn's master and 4 workers, the Celery worker
    # and its 2 children, beat.
    assert len(re.findall(r"^  (gunicorn|worker|beat) .* MiB at", out, re.M)) == 9
    acknowledged = _figure(r"ledger: ok: ([\d,]+) points acknowledged", out)
    stored = _figure(r"acknowledged, ([\d,]+) stored", out)
    assert acknowledged == stored > 0
    assert re.search(r"drain: ok: .*done [\d,]+", out)
    assert out.strip().splitlines()[-1].startswith("verdict: PASS: ")


# The verdicts themselves, on figures given directly.


def _result(*, writes: int, failures: int = 0, times: dict | None = None, seconds: float = 60):
    stats = [
        {
            "method": "POST",
            "name": "/api/metrics/counter",
            "num_requests": writes + failures,
            "num_failures": failures,
            "response_times": times or {"10": writes + failures},
        },
        {"method": "GET", "name": "/api/metrics/[name]", "num_requests": 5, "num_failures": 0,
         "response_times": {"900": 5}},
    ]  # fmt: skip
    statuses = Counter({"201": writes, "200": 5})
    if failures:
        statuses["502"] = failures
    return loadtest.LoadResult(stats, statuses, Counter({"m": writes}), seconds, 0)


def test_verdict_needs_the_rate_the_write_p95_and_no_failed_request():
    ok, line = loadtest.verdict(_result(writes=10_000), target_writes=10_000, target_p95_ms=200)
    assert ok, line
    # Queries are not writes: their 900 ms does not count against the write p95.
    assert "p95 10 ms" in line

    slow = _result(writes=10_000, times={"10": 9_400, "200": 600})
    assert not loadtest.verdict(slow, target_writes=10_000, target_p95_ms=200)[0]
    assert not loadtest.verdict(_result(writes=9_999), target_writes=10_000, target_p95_ms=200)[0]
    failing, line = loadtest.verdict(
        _result(writes=10_000, failures=1), target_writes=10_000, target_p95_ms=200
    )
    assert not failing and "1 5xx" in line


def test_histogram_percentile_is_the_nearest_rank_over_all_rows():
    rows = [{"response_times": {"5": 90}}, {"response_times": {"300": 10}}]
    assert loadtest.histogram_percentile(rows, 90) == 5
    assert loadtest.histogram_percentile(rows, 91) == 300


def test_durations_are_read_as_locust_writes_them():
    assert [loadtest.seconds(t) for t in ("90", "90s", "2m", "1h30m")] == [90, 90, 120, 5400]


def test_ledger_check_fails_on_a_point_missing_or_stored_twice():
    assert soak.ledger_check(Counter(a=3, b=2), Counter(a=3, b=2)).ok
    missing = soak.ledger_check(Counter(a=3, b=2), Counter(a=3, b=1))
    assert not missing.ok and "b: 2 acknowledged, 1 stored" in missing.detail
    assert not soak.ledger_check(Counter(a=3), Counter(a=4)).ok
    assert not soak.ledger_check(Counter(), Counter()).ok


def test_memory_check_fails_on_growth_and_on_a_replaced_process():
    sampler = soak.Sampler(stack=None, every=1)  # type: ignore[arg-type]
    sampler.roles = {1: "gunicorn child 1", 2: "worker child 1", 3: "gunicorn child 5"}
    sampler.samples = [
        soak.Sample(10, {1: 100, 2: 100}, 4),
        soak.Sample(50, {1: 109, 2: 100}, 4),
    ]
    assert all(c.ok for c in soak.memory_checks(sampler, 10, 10))
    assert not all(c.ok for c in soak.memory_checks(sampler, 10, 5))
    sampler.samples.append(soak.Sample(60, {1: 105, 3: 100}, 4))
    details = [c.detail for c in soak.memory_checks(sampler, 10, 10) if not c.ok]
    assert any("worker child 1 (pid 2) exited" in d for d in details), details
    assert any("gunicorn child 5 (pid 3)" in d for d in details), details


def test_connection_check_allows_a_transient_connection_but_not_a_rising_level():
    sampler = soak.Sampler(stack=None, every=1)  # type: ignore[arg-type]
    rss = {pid: 1 for pid in range(9)}  # 9 processes: 8 may hold a connection
    level = [4, 4, 5, 4, 4, 4, 4, 6, 4, 4]
    sampler.samples = [soak.Sample(t, rss, n) for t, n in enumerate(level)]
    assert soak.connection_check(sampler, 3, 10).ok
    rising = [4, 4, 4, 4, 5, 5, 6, 6, 6, 6]
    sampler.samples = [soak.Sample(t, rss, n) for t, n in enumerate(rising)]
    assert not soak.connection_check(sampler, 3, 10).ok
    one_too_many = [4, 4, 5, 4, 4, 4, 4, 4, 9, 4]
    sampler.samples = [soak.Sample(t, rss, n) for t, n in enumerate(one_too_many)]
    assert not soak.connection_check(sampler, 3, 10).ok
