"""What a locust run measured (bench/_locust.py): the write rate is the writes started within the
run time over the run time, whatever the stop's tail adds after it."""

from __future__ import annotations

import json
from collections import Counter

from bench import _locust
from bench._stack import Stack


def test_histogram_percentile_is_the_nearest_rank_over_all_rows():
    rows = [{"response_times": {"5": 90}}, {"response_times": {"300": 10}}]
    assert _locust.histogram_percentile(rows, 90) == 5
    assert _locust.histogram_percentile(rows, 91) == 300


class _Finished:
    """A locust process that has exited."""

    tag = "t1"

    def wait(self, timeout: float) -> int:
        return 0


def _report(tmp_path, **in_run) -> None:
    # A 15-s run: the first request started at 100, the last response came 22 s later (the stop
    # let the requests in flight finish), 40 writes in all of which 30 started within the 15 s.
    stats = [
        {"method": "POST", "name": "/api/metrics/counter", "num_requests": 38, "num_failures": 1,
         "start_time": 100.0, "last_request_timestamp": 122.0, "response_times": {"10": 38}},
        {"method": "POST", "name": "/api/metrics/batch", "num_requests": 2, "num_failures": 0,
         "start_time": 101.0, "last_request_timestamp": 121.0, "response_times": {"50": 2}},
        {"method": "GET", "name": "/api/metrics/[name]", "num_requests": 4, "num_failures": 0,
         "start_time": 102.0, "last_request_timestamp": 110.0, "response_times": {"90": 4}},
    ]  # fmt: skip
    report = {
        "statuses": {"201": 39, "200": 4, "502": 1},
        "acknowledged": {"http.requests": 37, "cpu.percent": 200},
        "stats": stats,
        "in_run": {"started": 99.5, "run_time": 15, **in_run},
    }
    (tmp_path / "report-t1.json").write_text(json.dumps(report))


def test_the_write_rate_counts_the_writes_started_within_the_run_time_over_the_run_time(
    tmp_path,
):
    _report(
        tmp_path,
        requests={"POST /api/metrics/counter": 29, "POST /api/metrics/batch": 1,
                  "GET /api/metrics/[name]": 4},
        failures={"POST /api/metrics/counter": 1},
        points=128,
    )  # fmt: skip
    stack = Stack(env={}, database_url="", base_url="", api_key="", workdir=tmp_path)

    result = _locust.locust_result(stack, _Finished(), timeout=1)  # type: ignore[arg-type]

    assert result.seconds == 15 and result.run_started == 99.5
    # 29 + 1 started in the run time, one of them failed: 29 writes in 15 s, not 39 in 22 s.
    assert result.writes_in_run == 29
    assert result.writes_per_minute == 29 / 15 * 60
    assert result.points_per_minute == 128 / 15 * 60
    # Every request and every acknowledged point still counts where totals are meant.
    assert result.writes == 39 and result.requests == 44 and result.failed == 1
    assert result.acknowledged == Counter({"http.requests": 37, "cpu.percent": 200})


def test_queries_are_not_writes_in_the_rate():
    result = _locust.LoadResult(
        [], Counter(), Counter(), 60, 0,
        started=Counter({"GET /api/metrics/[name]": 500, "POST /api/metrics/value": 60}),
    )  # fmt: skip
    assert result.writes_per_minute == 60
