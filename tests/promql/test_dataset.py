"""The synthetic PromQL dataset: its shape, and `dataset_load` writing it to a live service."""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from datetime import UTC, datetime

import pytest
from django.db import connection

from tests.promql.dataset import (
    BUCKETS,
    INCREMENTS_SUFFIX,
    dataset_build,
    dataset_load,
    dataset_openmetrics,
)
from tests.security.conftest import HTTPS

END = datetime(2026, 12, 7, 10, 0, 30, tzinfo=UTC)  # a time is a parameter: any recent minute


@pytest.fixture(scope="module")
def dataset():
    return dataset_build(end=END)


def test_the_same_end_and_seed_give_the_same_points(dataset):
    assert dataset_build(end=END.timestamp()) == dataset
    assert dataset_build(end=END, seed=26) != dataset
    assert (dataset.start, dataset.end) == (END.timestamp() - 30 - 3 * 3600, END.timestamp() - 30)
    assert dataset_build(end=END, hours=0.5).start == dataset.end - 1800


def test_samples_every_15_s_off_whole_seconds_within_the_range(dataset):
    for s in dataset.series:
        times = [ms for ms, _ in s.samples]
        assert times == sorted(set(times)), s.name
        assert all(ms % 1000 for ms in times), s.name  # never a whole second, so never a minute
        assert dataset.start * 1000 < times[0] and times[-1] < dataset.end * 1000
        steps = {b - a for a, b in itertools.pairwise(times)}
        if s.name != "demo_intermittent_metric":
            assert len(times) == 3 * 3600 // 15, s.name
            assert min(steps) >= 15_000 - 400 and max(steps) <= 15_000 + 400, s.name
    # Each series its own phase, but a histogram's buckets, _sum and _count share their scrape's.
    phases = {s.samples[0][0] % 15_000 for s in dataset.series}
    histograms = [s for s in dataset.series if s.name.startswith("demo_api_request_duration")]
    assert len(phases) == len(dataset.series) - len(histograms) + len(histograms) // 10


def test_the_families_and_label_sets(dataset):
    by_name = defaultdict(list)
    for s in dataset.series:
        by_name[s.name].append(s)
    assert len(by_name["demo_memory_usage_bytes"]) == 12
    assert {s.tags["type"] for s in by_name["demo_memory_usage_bytes"]} == {
        "buffers", "cached", "free", "used",
    }  # fmt: skip
    assert len(by_name["demo_cpu_usage_seconds_total"]) == 9
    assert {s.kind for s in by_name["demo_cpu_usage_seconds_total"]} == {"counter"}
    assert set(by_name["demo_api_request_duration_seconds_count"][0].tags) == {
        "instance", "job", "method", "path", "status",
    }  # fmt: skip
    buckets = by_name["demo_api_request_duration_seconds_bucket"]
    assert {s.tags["le"] for s in buckets} == {*(repr(b) for b in BUCKETS), "+Inf"}
    assert all(len(s.labels) <= 10 for s in dataset.series)  # the service's tag limit
    values = [v for s in dataset.series if s.kind == "gauge" for _, v in s.samples]
    assert min(values) < 0 and any(v == 0 for v in values)
    assert any(v != math.floor(v) for v in values)


def test_the_intermittent_series_has_gaps_both_bridged_and_not_by_the_lookback(dataset):
    gaps = set()
    for s in dataset.series:
        if s.name == "demo_intermittent_metric":
            gaps |= {b - a for (a, _), (b, _) in itertools.pairwise(s.samples) if b - a > 20_000}
    assert any(gap < 300_000 for gap in gaps) and any(gap > 300_000 for gap in gaps)


def test_counters_are_increments_whose_totals_are_exact_and_monotonic(dataset):
    counters = [s for s in dataset.series if s.kind == "counter"]
    assert counters
    for s in counters:
        assert all(v >= 0 and v * 64 == int(v * 64) for _, v in s.samples), s.name
        totals = [v for _, v in s.totals()]
        assert totals == sorted(totals)
        assert totals[-1] == math.fsum(v for _, v in s.samples)
    assert any(v == 0 for s in counters for _, v in s.samples)


def test_histogram_buckets_are_cumulative_and_inf_is_the_count(dataset):
    groups = defaultdict(dict)
    counts = {}
    for s in dataset.series:
        base = tuple(kv for kv in s.labels if kv[0] != "le")
        if s.name.endswith("_bucket"):
            groups[base][s.tags["le"]] = [v for _, v in s.samples]
        elif s.name.endswith("_count"):
            counts[base] = [v for _, v in s.samples]
    assert len(groups) == 12
    for base, buckets in groups.items():
        ordered = [buckets[repr(b)] for b in BUCKETS] + [buckets["+Inf"]]
        for column in zip(*ordered, strict=True):
            assert list(column) == sorted(column)
        assert buckets["+Inf"] == counts[base]


def test_prometheus_gets_totals_and_increments_and_openmetrics_text(dataset, tmp_path):
    held = {(name, labels): samples for name, labels, samples in dataset.prometheus_series()}
    assert len(held) == dataset.prometheus_series_count()
    cpu = next(s for s in dataset.series if s.name == "demo_cpu_usage_seconds_total")
    assert held[(cpu.name, cpu.labels)] == cpu.totals()
    assert held[(cpu.name + INCREMENTS_SUFFIX, cpu.labels)] == cpu.samples
    path = tmp_path / "data.om"
    written = dataset_openmetrics(dataset, path)
    lines = path.read_text().splitlines()
    assert written == len(lines) - 1 == sum(len(s) for s in held.values())
    assert lines[-1] == "# EOF"
    first = next(line for line in lines if line.startswith("demo_cpu_usage_seconds_total{"))
    assert first.startswith('demo_cpu_usage_seconds_total{instance="demo.promlabs.com:10000",')
    assert first.rsplit(" ", 1)[1].count(".") == 1  # seconds with milliseconds


def test_service_points_are_increments_and_values_with_exact_times(dataset):
    points = list(dataset.service_points())
    assert len(points) == dataset.point_count()
    kinds = {p["name"]: p["type"] for p in points}
    assert kinds["demo_cpu_usage_seconds_total"] == "counter"
    assert kinds["demo_memory_usage_bytes"] == "value"
    assert not any(name.endswith(INCREMENTS_SUFFIX) for name in kinds)
    first = points[0]
    ms = dataset.series[0].samples[0][0]
    assert datetime.fromisoformat(first["timestamp"]).timestamp() * 1000 == pytest.approx(ms, abs=0)


@pytest.mark.server
def test_dataset_load_stores_every_point_through_the_batch_endpoint(start_gunicorn, api_key):
    _, raw_key = api_key
    server = start_gunicorn()
    small = dataset_build(end=datetime.now(UTC), hours=0.25)
    assert small.point_count() > 2000  # more than one batch, and a last one that is not full
    assert small.point_count() % 1000

    assert dataset_load(server.url, raw_key, small, headers=HTTPS) == small.point_count()

    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM metric_points")
        assert cursor.fetchone()[0] == small.point_count()
        cursor.execute(
            """SELECT m.type, count(*), sum(p.value) FROM metric_points p
               JOIN metrics m ON m.id = p.metric_id
               WHERE m.name = 'demo_cpu_usage_seconds_total' GROUP BY m.type"""
        )
        kind, count, total = cursor.fetchone()
        cursor.execute(
            """SELECT count(*) FROM metric_points p JOIN metrics m ON m.id = p.metric_id
               WHERE extract(milliseconds FROM p.recorded_at)::numeric % 1000 = 0"""
        )
        on_whole_seconds = cursor.fetchone()[0]
    cpu = [s for s in small.series if s.name == "demo_cpu_usage_seconds_total"]
    assert (kind, count) == ("counter", sum(len(s.samples) for s in cpu))
    assert total == sum(v for s in cpu for _, v in s.samples)  # multiples of 1/64: exact
    assert on_whole_seconds == 0  # milliseconds kept
