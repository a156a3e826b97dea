"""End to end with a real `celery worker` process: crashes, a flushed Redis, a failing database."""

import os
import signal
import time
from datetime import timedelta

import psycopg
import pytest
from django.conf import settings
from django.db import transaction
from django.db.models import Sum
from django.db.utils import OperationalError
from django.utils import timezone

from metrics.models import IngestBatch, MetricPoint, RollupDay, RollupMinute
from metrics.tasks import batches_sweep_task
from tests.helpers import post_async, wait_for
from tests.processes import broker, queued_batch_ids, worker_database_url

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]

FINISHED = {"done", "failed"}


def batch_of(count: int, name: str = "jobs.latency") -> dict:
    return {
        "points": [
            {"type": "value", "name": name, "value": float(i), "tags": {"shard": str(i % 3)}}
            for i in range(count)
        ]
    }


def status(client, batch_id: int) -> dict:
    response = client.get(f"/api/batches/{batch_id}")
    assert response.status_code == 200, response.content
    return response.json()


def wait_until_finished(client, batch_id: int, worker, timeout: float = 30) -> dict:
    return wait_for(
        lambda: (s := status(client, batch_id))["state"] in FINISHED and s,
        timeout=timeout,
        what=f"batch {batch_id} to finish",
        log=worker.log,
    )


def assert_stored_once(count: int) -> None:
    assert MetricPoint.objects.count() == count
    assert MetricPoint.objects.aggregate(s=Sum("value"))["s"] == sum(range(count))
    for rollup in (RollupMinute, RollupDay):
        assert rollup.objects.aggregate(n=Sum("count"))["n"] == count


def sweep_as_if_later(seconds: float) -> int:
    """Run the sweeper for real, with a "now" far enough ahead that the batch looks stale."""
    later = timezone.now() + timedelta(seconds=seconds)
    return batches_sweep_task.apply(kwargs={"now": later.isoformat()}).get()


def wait_until_unlocked(batch_id: int, worker) -> None:
    """PostgreSQL ends a killed worker's transaction once it sees the connection closed."""

    def unlocked() -> bool:
        try:
            with transaction.atomic():
                IngestBatch.objects.select_for_update(nowait=True).filter(pk=batch_id).exists()
        except OperationalError:
            return False
        return True

    wait_for(unlocked, timeout=15, what="the killed attempt's lock to go", log=worker.log)


def test_async_batch_is_written_by_the_worker_and_reported_done(api_client, start_worker):
    worker = start_worker()
    response = post_async(
        api_client, "/api/metrics/batch", batch_of(150), **{"Idempotency-Key": "e2e-1"}
    )
    assert response.status_code == 202, response.content
    batch_id = response.json()["batch_id"]
    final = wait_until_finished(api_client, batch_id, worker)
    assert (final["state"], final["attempts"], final["error"], final["points"]) == (
        "done",
        1,
        None,
        150,
    )
    assert final["processed_at"] is not None
    assert_stored_once(150)
    # The retry of the same request replays the 202 and queues nothing new.
    again = post_async(
        api_client, "/api/metrics/batch", batch_of(150), **{"Idempotency-Key": "e2e-1"}
    )
    assert (again.status_code, again.json()["batch_id"]) == (202, batch_id)
    assert IngestBatch.objects.count() == 1
    # One JSON log line per batch, with its points, attempts and duration.
    logged = wait_for(
        lambda: [r for r in worker.log_records() if r.get("batch_id") == batch_id],
        timeout=5,
        what="the batch's log line",
        log=worker.log,
    )
    assert logged[0]["message"] == "batch done"
    assert (logged[0]["points"], logged[0]["attempts"]) == (150, 1)
    assert logged[0]["duration_ms"] > 0


def batch_held_uncommitted(api_client, start_worker, *, points: int):
    """A worker whose first attempt sleeps inside its transaction, after writing, before
    committing, and the id of a batch of `points` it holds there: (worker, batch id)."""
    worker = start_worker(QUEUE_TEST_DELAY_SECONDS="30")
    batch_id = post_async(api_client, "/api/metrics/batch", batch_of(points)).json()["batch_id"]
    wait_for(
        lambda: status(api_client, batch_id)["state"] == "running",
        timeout=30,
        what="the batch to be claimed",
        log=worker.log,
    )
    time.sleep(1)  # the points are written by now; the transaction waits to commit
    return worker, batch_id


def test_worker_killed_mid_batch_and_restarted_stores_every_point_once(api_client, start_worker):
    worker, batch_id = batch_held_uncommitted(api_client, start_worker, points=300)
    worker.kill()
    wait_until_unlocked(batch_id, worker)
    assert status(api_client, batch_id)["state"] == "running"
    assert MetricPoint.objects.count() == 0  # the killed attempt's writes were rolled back
    # The broker holds the unacknowledged message until its visibility timeout (an hour); the
    # sweeper sends the batch again as soon as it is stale, since no live attempt holds it.
    restarted = start_worker()
    assert sweep_as_if_later(settings.QUEUE_STALE_SECONDS + 1) == 1
    final = wait_until_finished(api_client, batch_id, restarted)
    assert (final["state"], final["attempts"]) == ("done", 2)
    assert_stored_once(300)


def test_pool_process_killed_mid_batch_is_redelivered_and_stored_once(api_client, start_worker):
    worker, batch_id = batch_held_uncommitted(api_client, start_worker, points=40)
    children = worker.pool_children()
    assert len(children) == 1
    os.kill(children[0], signal.SIGKILL)
    # task_reject_on_worker_lost puts the message back; a new pool process takes the batch over
    # (the delay applies to the first attempt only), with no sweeper involved.
    final = wait_until_finished(api_client, batch_id, worker, timeout=40)
    assert (final["state"], final["attempts"]) == ("done", 2)
    assert_stored_once(40)


def test_redis_flushed_after_the_202_loses_nothing(api_client, queue_name, start_worker):
    batch_id = post_async(api_client, "/api/metrics/batch", batch_of(25)).json()["batch_id"]
    assert queued_batch_ids(queue_name) == [batch_id]
    broker().flushdb()
    assert queued_batch_ids(queue_name) == []
    worker = start_worker()
    assert sweep_as_if_later(settings.QUEUE_STALE_SECONDS + 1) == 1
    final = wait_until_finished(api_client, batch_id, worker)
    assert (final["state"], final["attempts"]) == ("done", 1)
    assert_stored_once(25)


def test_batch_that_always_hits_a_transient_error_fails_after_the_attempts(
    api_client, start_worker
):
    # Every insert into `metrics` waits on this lock until the worker's statement timeout.
    with psycopg.connect(worker_database_url()) as other:
        other.execute("LOCK TABLE metrics IN EXCLUSIVE MODE")
        worker = start_worker(QUEUE_MAX_ATTEMPTS="2", DB_STATEMENT_TIMEOUT_MS="300")
        batch_id = post_async(api_client, "/api/metrics/batch", batch_of(3, "new.metric"))
        batch_id = batch_id.json()["batch_id"]
        final = wait_until_finished(api_client, batch_id, worker)
        other.rollback()
    assert (final["state"], final["attempts"]) == ("failed", 2)
    assert final["error"].startswith("OperationalError: ")
    assert "statement timeout" in final["error"]
    assert MetricPoint.objects.count() == 0
    results = [r["message"] for r in worker.log_records() if r.get("batch_id") == batch_id]
    assert results[:2] == ["batch retry", "batch failed"]
