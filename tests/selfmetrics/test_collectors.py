"""The gauges read at scrape time: the outbox backlog, the pending purges (both through metrics'
selectors), the broker queue and PostgreSQL's connections; a source that fails is left out."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
from django.db import DatabaseError, connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from apikeys.services import apikey_create
from metrics import purges, selectors
from metrics.models import IngestBatch, MetricPurge
from metrics.services import PointInput, points_ingest
from selfmetrics import collectors
from tests.helpers import wait_for
from tests.processes import samples, scrape_text, value


def _families(source) -> dict[tuple[str, tuple], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in source()
        for sample in family.samples
    }


@pytest.mark.django_db
def test_queue_depth_counts_unfinished_batches_by_state_and_every_state_is_present():
    key, _ = apikey_create(name="depth", scopes=["write"])
    now = timezone.now()
    for state in ("pending", "pending", "failed", "done", "done"):
        IngestBatch.objects.create(
            api_key=key, state=state, payload=[], points=0, created_at=now, updated_at=now
        )
    assert selectors.outbox_backlog() == {"pending": 2, "failed": 1}
    assert _families(collectors.queue_depth) == {
        ("glowing_fiesta_queue_depth", (("state", "pending"),)): 2,
        ("glowing_fiesta_queue_depth", (("state", "running"),)): 0,
        ("glowing_fiesta_queue_depth", (("state", "failed"),)): 1,
    }


@pytest.mark.django_db
def test_the_outbox_backlog_reads_only_the_index_of_unfinished_batches():
    # The done batches are nearly all of the table: the count must be able to use the partial
    # index that leaves them out. With sequential scans forbidden, a query whose condition did
    # not match the index's would still scan the table.
    with CaptureQueriesContext(connection) as queries:
        selectors.outbox_backlog()
    [query] = queries.captured_queries
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("EXPLAIN " + query["sql"])
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "ingest_batches_unfinished_idx" in plan, plan


@pytest.mark.django_db
def test_pending_purges_and_the_age_of_the_oldest():
    assert _families(collectors.purges_pending) == {
        ("glowing_fiesta_metric_purges_pending", ()): 0,
        ("glowing_fiesta_metric_purge_oldest_seconds", ()): 0,
    }
    now = timezone.now()
    for age in (30, 90):
        MetricPurge.objects.create(
            metric_id=age,
            name=f"gone.{age}",
            series_ids=[],
            created_at=now - timedelta(seconds=age),
        )
    assert selectors.purges_pending() == (2, now - timedelta(seconds=90))
    found = _families(collectors.purges_pending)
    assert found[("glowing_fiesta_metric_purges_pending", ())] == 2
    assert 90 <= found[("glowing_fiesta_metric_purge_oldest_seconds", ())] < 100


def test_a_failing_source_is_left_out_and_logged_the_rest_answer(monkeypatch, caplog):
    def broken():
        raise DatabaseError("gone")
        yield  # a generator, as every source is

    def fine():
        yield collectors.GaugeMetricFamily("glowing_fiesta_fine", "Fine.", value=1)

    monkeypatch.setattr(
        collectors, "SOURCES", (("broken", broken, DatabaseError), ("fine", fine, DatabaseError))
    )
    caplog.set_level(logging.WARNING, logger=collectors.__name__)
    names = [family.name for family in collectors.ScrapeTimeCollector().collect()]
    assert names == ["glowing_fiesta_fine"]
    assert [r.source for r in caplog.records if r.getMessage() == "scrape source failed"] == [
        "broken"
    ]


@pytest.mark.django_db
def test_metrics_shows_the_purges_of_deleted_metrics_until_they_are_done(make_api_client):
    reader = make_api_client(scopes=["read"])

    def parse(response) -> dict:
        assert response.status_code == 200
        return samples(response.content.decode())

    before = parse(reader.get("/metrics"))
    assert before[("glowing_fiesta_metric_purges_pending", ())] == 0  # present, and zero
    assert before[("glowing_fiesta_metric_purge_oldest_seconds", ())] == 0
    points_ingest(points=[PointInput("counter", "purged.soon", 1.0, timezone.now(), {})])
    admin = make_api_client(scopes=["admin"])
    assert admin.delete("/api/metrics/purged.soon").status_code == 204
    MetricPurge.objects.update(created_at=timezone.now() - timedelta(seconds=90))
    parsed = parse(reader.get("/metrics"))
    assert value(parsed, "glowing_fiesta_metric_purges_pending") == 1
    assert 89 < value(parsed, "glowing_fiesta_metric_purge_oldest_seconds") < 120
    purges.purge_run(purge_id=MetricPurge.objects.get().pk)
    parsed = parse(reader.get("/metrics"))
    assert parsed[("glowing_fiesta_metric_purges_pending", ())] == 0
    assert parsed[("glowing_fiesta_metric_purge_oldest_seconds", ())] == 0


def _batch(name: str, kind: str = "counter", size: int = 3) -> dict:
    return {"points": [{"type": kind, "name": name, "value": 1} for _ in range(size)]}


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_queue_depth_shows_pending_batches_until_a_worker_drains_them(stack):
    service = stack.serve(workers=1)
    key = {"X-API-Key": stack.write_key, "Prefer": "respond-async"}
    for i in range(3):
        response = service.request("POST", "/api/metrics/batch", _batch(f"queued.{i}"), **key)
        assert response.status == 202, response.body
    # This one will fail in the worker: its metric becomes a value before the batch runs.
    assert service.request("POST", "/api/metrics/batch", _batch("conflicted"), **key).status == 202
    direct = service.request(
        "POST",
        "/api/metrics/value",
        {"name": "conflicted", "value": 2},
        **{"X-API-Key": stack.write_key},
    )
    assert direct.status == 201

    parsed = samples(scrape_text(service, stack.read_key))
    assert value(parsed, "glowing_fiesta_queue_depth", state="pending") == 4
    assert value(parsed, "glowing_fiesta_queue_depth", state="running") == 0
    # One wake-up for the four: the later 202s found it queued.
    assert value(parsed, "glowing_fiesta_queue_broker_messages", queue=stack.queue) == 1

    stack.start_worker()

    task = "metrics.ProcessMetricBatch"

    def drained():
        # The task that wakes writes every pending batch (and may wake one more worker), so the
        # queue is drained when no batch is pending or running and no message is left.
        now = samples(scrape_text(service, stack.read_key))
        done = (
            value(now, "glowing_fiesta_queue_depth", state="pending") == 0
            and value(now, "glowing_fiesta_queue_depth", state="running") == 0
            and value(now, "glowing_fiesta_queue_broker_messages", queue=stack.queue) == 0
            and value(now, "glowing_fiesta_celery_tasks_total", task=task, outcome="success") >= 1
        )
        return now if done else None

    parsed = wait_for(drained, timeout=60, what="the worker to drain the queue")
    assert value(parsed, "glowing_fiesta_queue_depth", state="running") == 0
    assert value(parsed, "glowing_fiesta_queue_depth", state="failed") == 1
    assert value(parsed, "glowing_fiesta_queue_broker_messages", queue=stack.queue) == 0
    # Figures recorded in the worker's pool processes are in the web's scrape.
    assert value(parsed, "glowing_fiesta_points_ingested_total", path="async") == 9
    assert value(parsed, "glowing_fiesta_ingestion_failures_total", reason="batch_failed") == 1
    # Connections by role, told apart by application_name: the web worker serving this scrape
    # (the Celery pool closes its connection after each task).
    roles = {k[1] for k in parsed if k[0] == "glowing_fiesta_db_connections"}
    assert (("role", "web"), ("state", "active")) in roles, roles
    assert value(parsed, "glowing_fiesta_db_max_connections") >= 1
    assert value(parsed, "glowing_fiesta_db_server_connections") >= 2


@pytest.mark.django_db
def test_storage_bytes_by_kind_and_the_compacted_days():
    from datetime import UTC, datetime, timedelta

    from metrics.compaction import compactable_before, points_compact
    from metrics.services import PointInput, points_ingest

    now = datetime.now(UTC)
    day = datetime.combine(compactable_before(now), datetime.min.time(), UTC) - timedelta(days=1)
    points_ingest(
        points=[PointInput("value", "sized", 2.5, day + timedelta(hours=h)) for h in range(3)]
    )
    before = _families(collectors.storage_size)
    assert before[("glowing_fiesta_compacted_partitions", ())] == 0
    assert before[("glowing_fiesta_storage_bytes", (("kind", "raw"),))] > 0
    points_compact(now=now)
    after = _families(collectors.storage_size)
    assert after[("glowing_fiesta_compacted_partitions", ())] == 1
    assert after[("glowing_fiesta_compacted_points", ())] == 3
    compact = ("glowing_fiesta_storage_bytes", (("kind", "compact"),))
    assert after[compact] > before[compact]
    assert {labels for name, labels in after if name == "glowing_fiesta_storage_bytes"} == {
        (("kind", kind),) for kind in ("raw", "minute", "compact", "rollups")
    }


def _broker_messages(settings) -> float | None:
    families = list(collectors.broker_queue())
    if not families:
        return None
    (sample,) = families[0].samples
    assert sample.labels == {"queue": settings.CELERY_TASK_DEFAULT_QUEUE}
    return sample.value


def test_on_rabbitmq_the_broker_gauge_counts_the_messages_ready(settings):
    """A private RabbitMQ node: nothing declared yet is 0, then the messages published, then a
    node that is gone makes the source fail (and so be left out of the scrape, as above)."""
    import tempfile
    from pathlib import Path

    import kombu

    from tests.reliability.harness import RabbitMQServer

    # Not pytest's tmp_path: the node runs as the `rabbitmq` user, who cannot enter it.
    node = RabbitMQServer(Path(tempfile.mkdtemp(prefix="gf-gauge-rabbitmq-")))
    try:
        node.start()
        settings.CELERY_BROKER_URL = node.url()
        settings.CELERY_TASK_DEFAULT_QUEUE = "gauge-test"
        assert _broker_messages(settings) == 0
        with kombu.Connection(node.url()) as connection:
            queue = kombu.Queue("gauge-test", durable=True)
            producer = connection.Producer()
            for n in range(3):
                producer.publish({"n": n}, routing_key="gauge-test", declare=[queue])
        assert _broker_messages(settings) == 3
        node.shutdown()
        with pytest.raises((OSError, kombu.exceptions.OperationalError)):
            _broker_messages(settings)
    finally:
        node.destroy()
