"""`make bench-profile` for real, briefly: `python -m bench.profiles` creates its own database, sends
requests through the whole middleware stack in one process and prints where the time went."""

from __future__ import annotations

import re

import pytest


@pytest.fixture
def profile(run_bench):
    def run(*args: str) -> str:
        result = run_bench("profiles", *args, timeout=120)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        return result.stdout

    return run


def _per_unit(out: str) -> tuple[float, float]:
    found = re.search(r"per unit: wall ([\d.]+) ms, CPU of this process ([\d.]+) ms", out)
    assert found, out[-3000:]
    return float(found.group(1)), float(found.group(2))


@pytest.mark.parametrize("kind", ["single", "bare", "batch"])
def test_a_request_profile_names_the_view_and_its_time(profile, kind):
    out = profile(kind, "--count", "20", "--top", "60")
    assert out.startswith(f"{kind}: 20 x ")
    wall, cpu = _per_unit(out)
    assert 0 < cpu <= wall * 1.05  # one thread: its CPU time cannot pass the wall time
    assert "--- top 60 by tottime ---" in out and "--- top 60 by cumulative ---" in out
    # The endpoint's own frames are in the cumulative list.
    view = r"bare_app\.py:\d+\(post\)" if kind == "bare" else r"\bingest\.py:\d+\(post\)"
    assert re.search(view, out), out[-3000:]


def test_a_plain_run_times_without_the_profiler_with_either_collector(profile):
    for collector in ("settled", "default"):
        out = profile("single", "--count", "20", "--plain", "--collector", collector)
        assert out.startswith(f"single: 20 x single counter; collector {collector}; not profiled")
        assert _per_unit(out)[1] > 0
        assert "--- top" not in out


def test_a_drain_profile_runs_the_worker_task_over_every_queued_batch(profile):
    # The script itself fails unless the one task run leaves every batch done.
    out = profile("drain", "--count", "4", "--top", "40")
    assert out.startswith("drain: 4 x queued batch of 1000, written by one task run")
    assert "process_metric_batch" in out
    assert _per_unit(out)[1] > 0
