"""The own-store flush: exact counts from several processes' deltas, bounded samples; and the
same figures flushed by real gunicorn workers, read back through the ordinary query API."""

from __future__ import annotations

import random
import time

import pytest
from django.db import connection
from django.utils import timezone

from metrics.models import Metric, MetricType
from selfmetrics.selfstore import SAMPLES_PER_KEY, Reservoir, SelfStore

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


def _groups(service, key: str, path: str) -> dict[str, float]:
    """{route: value summed over the buckets} of a grouped query (404: empty)."""
    response = service.request("GET", path, **{"X-API-Key": key})
    if response.status == 404:
        return {}
    assert response.status == 200, response.body
    return {
        group["tags"]["route"]: sum(b["value"] or 0 for b in group["buckets"])
        for group in response.json()["groups"]
    }


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_own_figures_answer_through_the_query_api_after_one_flush_interval(stack):
    service = stack.serve(workers=2, SELF_METRICS="true", SELF_METRICS_INTERVAL="1")
    key = {"X-API-Key": stack.write_key}
    n = 30
    for _ in range(n):
        assert (
            service.request("POST", "/api/metrics/counter", {"name": "seen"}, **key).status == 201
        )
    bad = service.request("POST", "/api/metrics/counter", {"name": "bad name!"}, **key)
    assert bad.status == 400

    counts_path = "/api/metrics/glowing_fiesta.requests?aggregation=sum&group_by=route"
    deadline = time.monotonic() + 15
    while _groups(service, stack.read_key, counts_path).get("metric-counter", 0) < n + 1:
        assert time.monotonic() < deadline, "the own figures were not flushed in time"
        time.sleep(0.5)
    time.sleep(1.5)  # one more interval: nothing is written twice
    counts = _groups(service, stack.read_key, counts_path)
    assert counts["metric-counter"] == n + 1  # exact: 30 created + 1 refused

    base = "/api/metrics/glowing_fiesta.request_duration_ms?group_by=route&aggregation="
    p95 = _groups(service, stack.read_key, base + "p95")
    assert p95["metric-counter"] > 0
    average = _groups(service, stack.read_key, base + "avg")
    maximum = _groups(service, stack.read_key, base + "max")
    assert 0 < average["metric-counter"] <= p95["metric-counter"] * 2
    assert maximum["metric-counter"] >= p95["metric-counter"]
    # Under SAMPLES_PER_KEY per interval every sample is written: the count is exact too.
    assert _groups(service, stack.read_key, base + "count")["metric-counter"] == n + 1

    failures = service.request(
        "GET",
        "/api/metrics/glowing_fiesta.ingestion_failures?aggregation=sum&group_by=reason",
        **{"X-API-Key": stack.read_key},
    )
    assert failures.status == 200
    by_reason = {
        g["tags"]["reason"]: sum(b["value"] or 0 for b in g["buckets"])
        for g in failures.json()["groups"]
    }
    assert by_reason == {"invalid": 1}

    points = service.request(
        "GET", "/api/metrics/glowing_fiesta.points_ingested?aggregation=sum&group_by=path",
        **{"X-API-Key": stack.read_key},
    )  # fmt: skip
    by_path = {
        g["tags"]["path"]: sum(b["value"] or 0 for b in g["buckets"])
        for g in points.json()["groups"]
    }
    assert by_path["sync"] == n
    assert by_path["self"] > 0  # the own figures are counted apart from clients' points
    assert set(by_path) == {"sync", "self"}
    # They are ordinary metrics: listed, queried and kept like any other.
    db = service.request(
        "GET", "/api/metrics/glowing_fiesta.db_write_latency_ms?aggregation=max",
        **{"X-API-Key": stack.read_key},
    )  # fmt: skip
    assert db.status == 200
    assert any(b["value"] for b in db.json()["buckets"])


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_self_metrics_off_writes_nothing_but_metrics_endpoint_stays(stack):
    service = stack.serve(workers=1, SELF_METRICS="false", SELF_METRICS_INTERVAL="1")
    key = {"X-API-Key": stack.write_key}
    for _ in range(5):
        assert (
            service.request("POST", "/api/metrics/counter", {"name": "seen"}, **key).status == 201
        )
    time.sleep(2.5)
    response = service.request("GET", "/api/metrics/glowing_fiesta.requests", **key)
    assert response.status == 404
    scrape = service.request("GET", "/metrics", **{"X-API-Key": stack.read_key})
    assert scrape.status == 200
    assert (
        b'glowing_fiesta_request_duration_seconds_count{method="POST",route="metric-counter",status="201"} 5.0'
        in scrape.body
    )
