"""The own-store flush: exact counts from several processes' deltas, bounded samples."""

from __future__ import annotations

import random

import pytest
from django.db import connection
from django.utils import timezone

from glowing_fiesta.monitoring.selfstore import SAMPLES_PER_KEY, Reservoir, SelfStore
from metrics.models import Metric, MetricType

pytestmark = pytest.mark.django_db


def _sum(name: str, **tags: str) -> float:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT coalesce(sum(p.value), 0), count(*) FROM metric_points p "
            "JOIN series s ON s.id = p.series_id JOIN metrics m ON m.id = p.metric_id "
            "WHERE m.name = %s AND s.tags @> %s::jsonb",
            [name, __import__("json").dumps(tags)],
        )
        return cursor.fetchone()


def test_deltas_of_two_processes_sum_exactly_and_are_written_once():
    web, worker = SelfStore(interval=10), SelfStore(interval=10)
    for _ in range(7):
        web.count("requests", (("route", "metric-counter"),))
    worker.count("requests", (("route", "metric-counter"),), 5)
    now = timezone.now()
    assert web.flush(now=now) == 1
    assert worker.flush(now=now) == 1
    assert web.flush(now=now) == 0  # nothing left: a second flush writes nothing
    total, points = _sum("glowing_fiesta.requests", route="metric-counter")
    assert (total, points) == (12, 2)
    assert Metric.objects.get(name="glowing_fiesta.requests").type == MetricType.COUNTER


def test_a_failed_flush_keeps_its_counts_for_the_next():
    store = SelfStore(interval=10)
    store.count("auth_failures", (("reason", "missing"),), 3)
    store.sample("request_duration_ms", (("route", "x"),), 1.5)
    # A write that fails half-way through points_ingest (here: a point without a timestamp).
    with pytest.raises(AttributeError):
        store.flush(now=None)
    assert store.flush(now=timezone.now()) == 1  # the counter, not the dropped sample
    assert _sum("glowing_fiesta.auth_failures", reason="missing") == (3, 1)


def test_a_conflicting_metric_of_ours_drops_the_batch_with_a_warning(caplog):
    Metric.objects.create(name="glowing_fiesta.rate_limited", type=MetricType.VALUE)
    store = SelfStore(interval=10)
    store.count("rate_limited", ())
    assert store.flush(now=timezone.now()) == 0
    assert "own figures not stored" in caplog.text
    assert store.take() == ({}, {})


def test_reservoir_writes_every_sample_up_to_its_size():
    reservoir = Reservoir()
    values = [float(v) for v in range(SAMPLES_PER_KEY)]
    for v in values:
        reservoir.add(v)
    assert sorted(reservoir.values()) == values


def test_reservoir_past_its_size_is_bounded_and_keeps_the_exact_maximum():
    random.seed(7)
    reservoir = Reservoir()
    values = [random.uniform(0, 10) for _ in range(10_000)] + [99.0]
    random.shuffle(values)
    for v in values:
        reservoir.add(v)
    kept = reservoir.values()
    assert len(kept) <= SAMPLES_PER_KEY + 1
    assert max(kept) == 99.0
    assert reservoir.seen == len(values)
    # A uniform sample: its median is near the true one (5).
    assert 3 < sorted(kept)[len(kept) // 2] < 7


def test_reservoir_one_past_its_size_writes_its_size_plus_the_maximum_at_most():
    reservoir = Reservoir()
    for v in range(SAMPLES_PER_KEY + 1):
        reservoir.add(float(v))
    kept = reservoir.values()
    assert SAMPLES_PER_KEY <= len(kept) <= SAMPLES_PER_KEY + 1
    assert max(kept) == float(SAMPLES_PER_KEY)
