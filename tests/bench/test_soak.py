"""`make soak` for real, briefly, and its checks on figures given directly: `python -m bench.soak`
runs the load test's stack and mix, samples memory and connections, waits for the queue to drain
and compares the points acknowledged with those stored.

The run here is short and light: 12 users pacing one task every 0.6 s (about 20 writes a second),
so that a busy machine's slower answers still leave them on pace. The rate it must hold is counted
over the requests started within the run time, divided by the run time, so a slow stop does not
dilute it. The script's default (thirty minutes at 10,000 writes a minute) is run by hand;
docs/TESTING.md has the figures.
"""

from __future__ import annotations

import re
from collections import Counter

import pytest

from bench import soak


@pytest.mark.gunicorn
@pytest.mark.worker
def test_soak_checks_memory_connections_drain_and_the_ledger(run_bench, figure):
    result = run_bench(
        "soak", "--duration", "15", "--users", "12", "--rate", "1200", "--sample", "1",
        "--settle", "30", "--max-rss-growth", "25",
        timeout=120,
    )  # fmt: skip

    out = result.stdout
    assert result.returncode == 0, out[-4000:] + result.stderr[-3000:]
    for check in ("rate", "errors", "rss", "connections", "drain", "ledger"):
        assert re.search(rf"^{check}: ok: ", out, re.M), (check, out[-3000:])
    assert figure(r"run time (\d+) s;", out) == 15
    # Every process of the stack is listed: gunicorn's master and 4 workers, the Celery worker
    # and its 2 children, beat.
    assert len(re.findall(r"^  (gunicorn|worker|beat) .* MiB at", out, re.M)) == 9
    acknowledged = figure(r"ledger: ok: ([\d,]+) points acknowledged", out)
    stored = figure(r"acknowledged, ([\d,]+) stored", out)
    assert acknowledged == stored > 0
    assert re.search(r"drain: ok: .*done [\d,]+", out)
    assert out.strip().splitlines()[-1].startswith("verdict: PASS: ")


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


def test_samples_count_from_the_load_start_not_from_locust_start_up():
    # Locust took 2.5 s to start its users: the warm-up's samples are those of the load.
    sampler = soak.Sampler(stack=None, every=1, started=1000.0)  # type: ignore[arg-type]
    sampler.samples = [
        soak.Sample(t, {1: 1}, n) for t, n in [(0, 0), (1, 0), (2, 0), (3, 4), (4, 5)]
    ]

    sampler.rebase(1002.5)

    assert [(s.at, s.connections) for s in sampler.samples] == [(0.5, 4), (1.5, 5)]
    assert sampler.started == 1002.5


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
