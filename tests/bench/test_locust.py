"""What a locust run measured (bench/_locust.py)."""

from __future__ import annotations

from bench import _locust


def test_histogram_percentile_is_the_nearest_rank_over_all_rows():
    rows = [{"response_times": {"5": 90}}, {"response_times": {"300": 10}}]
    assert _locust.histogram_percentile(rows, 90) == 5
    assert _locust.histogram_percentile(rows, 91) == 300
