"""The service's own figures in its own store, flushed by real gunicorn workers, read back
through the ordinary query API."""

from __future__ import annotations

import json
import time

import pytest
from django.utils import timezone

from apikeys.services import apikey_create
from metrics.models import Metric
from tests.helpers import wait_for

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


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


def test_a_real_worker_stores_the_gauges_once_per_tick(stack):
    from django.db import connection

    from glowing_fiesta.celery import app as celery_app
    from metrics.models import IngestBatch

    key, _ = apikey_create(name="gauges", scopes=["write"])
    now = timezone.now()
    for state in ("pending", "pending", "failed"):
        IngestBatch.objects.create(
            api_key=key, state=state, payload=[], points=0, created_at=now, updated_at=now
        )
    # The pool processes flush their own figures too (Celery tasks by outcome).
    stack.start_worker(SELF_METRICS="true", SELF_METRICS_INTERVAL="1")
    celery_app.send_task("monitoring.gauges_store", queue=stack.queue)

    def stored():
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT s.tags ->> 'state', p.value FROM metric_points p "
                "JOIN series s ON s.id = p.series_id JOIN metrics m ON m.id = p.metric_id "
                "WHERE m.name = 'glowing_fiesta.queue_depth'"
            )
            return dict(cursor.fetchall())

    assert wait_for(stored, timeout=30, what="the gauges task") == {
        "pending": 2.0, "running": 0.0, "failed": 1.0,
    }  # fmt: skip
    assert Metric.objects.get(name="glowing_fiesta.db_max_connections").type == "value"

    def task_counted():
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT s.tags, sum(p.value) FROM metric_points p "
                "JOIN series s ON s.id = p.series_id JOIN metrics m ON m.id = p.metric_id "
                "WHERE m.name = 'glowing_fiesta.celery_tasks' GROUP BY 1"
            )
            return cursor.fetchall()

    [(tags, runs)] = wait_for(task_counted, timeout=15, what="the worker's own figures")
    assert (json.loads(tags), runs) == (
        {"task": "monitoring.gauges_store", "outcome": "success"},
        1.0,
    )


def test_beat_sends_the_gauges_task_every_interval_only_with_self_metrics(settings):
    from glowing_fiesta.celery import app as celery_app
    from glowing_fiesta.celery import beat_schedule
    from glowing_fiesta.monitoring import tasks  # what a worker's autodiscovery imports

    settings.SELF_METRICS, settings.SELF_METRICS_INTERVAL = True, 7
    entry = beat_schedule(settings)["monitoring-gauges-store"]
    assert (entry["task"], entry["schedule"], entry["options"]) == (
        "monitoring.gauges_store", 7.0, {"expires": 7},
    )  # fmt: skip
    assert tasks.gauges_store_task.name in celery_app.tasks
    settings.SELF_METRICS = False
    assert "monitoring-gauges-store" not in beat_schedule(settings)
