"""The gauges task: sent by beat once per interval with SELF_METRICS, run by a real worker."""

from __future__ import annotations

import json

import pytest
from django.db import connection
from django.utils import timezone

from apikeys.services import apikey_create
from glowing_fiesta.celery import app as celery_app
from glowing_fiesta.celery import beat_schedule
from metrics.models import IngestBatch, Metric
from selfmetrics import tasks  # what a worker's autodiscovery imports
from tests.helpers import wait_for

TASK = "selfmetrics.gauges_store"


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_real_worker_stores_the_gauges_once_per_tick(stack):
    key, _ = apikey_create(name="gauges", scopes=["write"])
    now = timezone.now()
    for state in ("pending", "pending", "failed"):
        IngestBatch.objects.create(
            api_key=key, state=state, payload=[], points=0, created_at=now, updated_at=now
        )
    # The pool processes flush their own figures too (Celery tasks by outcome).
    stack.start_worker(SELF_METRICS="true", SELF_METRICS_INTERVAL="1")
    celery_app.send_task(TASK, queue=stack.queue)

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
    assert (json.loads(tags), runs) == ({"task": TASK, "outcome": "success"}, 1.0)


def test_beat_sends_the_gauges_task_every_interval_only_with_self_metrics(settings):
    settings.SELF_METRICS, settings.SELF_METRICS_INTERVAL = True, 7
    entry = beat_schedule(settings)["selfmetrics-gauges-store"]
    assert (entry["task"], entry["schedule"], entry["options"]) == (TASK, 7.0, {"expires": 7})
    assert tasks.gauges_store_task.name == TASK
    assert TASK in celery_app.tasks
    settings.SELF_METRICS = False
    assert "selfmetrics-gauges-store" not in beat_schedule(settings)
