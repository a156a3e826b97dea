"""`make loadtest` for real, briefly: `python -m bench.loadtest` starts gunicorn, a Celery worker
and beat on a database of their own, runs locust against them, prints its figures and a verdict,
and exits 0 on PASS, 1 on FAIL.

Each run is short and light (about 20 writes a second), so the targets given here are ones such a
run meets, or cannot meet whatever the machine. Locust's users run every task of the mix once as
they start (GF_EVERY_TASK_AT_START, passed through to the locustfile), so a route of weight 1 in
19 is in the summary however few tasks the run draws. The script's own defaults (two minutes at 10,000
writes a minute) are run by hand; docs/TESTING.md has the figures.
"""

from __future__ import annotations

from collections import Counter

import pytest

from bench import _locust, loadtest


@pytest.mark.gunicorn
@pytest.mark.worker
def test_loadtest_prints_the_summary_figures_and_a_passing_verdict(run_bench, figure):
    result = run_bench(
        "loadtest", "--duration", "6", "--users", "4", "--rate", "1200",
        "--target-writes", "600", "--target-p95-ms", "2000",
        timeout=90, env={"GF_EVERY_TASK_AT_START": "1"},
    )  # fmt: skip

    out = result.stdout
    assert result.returncode == 0, out[-3000:] + result.stderr[-3000:]
    # locust's own summary, then the script's figures and its verdict.
    assert "Aggregated" in out and "Response time percentiles" in out
    for route in (
        "GET      /api/metrics/[name]",
        "POST     /api/metrics/batch",
        "POST     /api/metrics/batch (async)",
        "POST     /api/metrics/counter",
        "POST     /api/metrics/value",
    ):
        assert route in out, (route, out[-6000:])
    assert figure(r"run time (\d+) s;", out) == 6
    writes = figure(r"writes: [\d,]+ acknowledged, ([\d,]+) writes/min", out)
    points = figure(r"writes/min, ([\d,]+) points/min", out)
    assert 600 <= writes <= 1800
    assert points > writes  # batches carry 100 points each
    assert figure(r"latency p50 (\d+) ms", out) <= figure(r"p95 (\d+) ms", out)
    verdict = out.strip().splitlines()[-1]
    assert verdict.startswith("verdict: PASS: "), verdict
    assert "(target >= 600)" in verdict and "0 5xx" in verdict


@pytest.mark.gunicorn
@pytest.mark.worker
def test_loadtest_exits_1_when_the_target_is_out_of_reach(run_bench):
    result = run_bench(
        "loadtest", "--duration", "2", "--users", "2", "--rate", "600",
        "--target-writes", "10000000",
        timeout=60,
    )  # fmt: skip

    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
    verdict = result.stdout.strip().splitlines()[-1]
    assert verdict.startswith("verdict: FAIL: "), verdict
    assert "(target >= 10,000,000)" in verdict


# The verdict itself, on figures given directly.


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
    return _locust.LoadResult(
        stats,
        statuses,
        Counter({"m": writes}),
        seconds,
        0,
        started=Counter(
            {"POST /api/metrics/counter": writes + failures, "GET /api/metrics/[name]": 5}
        ),
        started_failed=Counter({"POST /api/metrics/counter": failures}),
        started_points=writes,
    )


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
