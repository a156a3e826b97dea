"""Prefer: respond-async on the ingestion endpoints, and GET /api/batches/<id>."""

from datetime import UTC, datetime, timedelta

import pytest

from metrics.batches.process import outbox_points
from metrics.models import IngestBatch, Metric, MetricPoint
from metrics.services import PointInput
from tests.helpers import PROBLEM, post, post_async
from tests.processes import queued_batch_ids

pytestmark = pytest.mark.django_db


def test_batch_with_respond_async_gets_202_status_url_and_one_pending_row(
    api_client, django_capture_on_commit_callbacks
):
    now = (datetime.now(UTC) - timedelta(minutes=1)).replace(microsecond=0)
    body = {
        "points": [
            {"type": "counter", "name": "jobs.done", "tags": {"queue": "mail"}},
            {"type": "value", "name": "jobs.seconds", "value": 0.25, "timestamp": now.isoformat()},
            {"type": "value", "name": "jobs.seconds", "value": -3.5, "timestamp": now.timestamp()},
        ]
    }
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = post_async(api_client, "/api/metrics/batch", body)
    assert response.status_code == 202, response.content
    batch = IngestBatch.objects.get()
    assert response.json() == {"batch_id": batch.pk, "status_url": f"/api/batches/{batch.pk}"}
    assert response["Preference-Applied"] == "respond-async"
    assert response["Location"] == f"/api/batches/{batch.pk}"
    assert (batch.state, batch.points, batch.attempts, batch.api_key_id) == (
        "pending",
        3,
        0,
        api_client.api_key.pk,
    )
    stored = outbox_points(batch)
    assert batch.payload is None
    assert stored == [
        PointInput("counter", "jobs.done", 1.0, stored[0].timestamp, {"queue": "mail"}),
        PointInput("value", "jobs.seconds", 0.25, now, {}),
        PointInput("value", "jobs.seconds", -3.5, now, {}),
    ]
    # Nothing is written yet, and the task is only sent once the request's transaction commits.
    assert MetricPoint.objects.count() == 0
    assert Metric.objects.count() == 0
    assert len(callbacks) == 1


@pytest.mark.parametrize(
    ("path", "body", "value"),
    [
        ("/api/metrics/counter", {"name": "hits"}, 1.0),
        ("/api/metrics/value", {"name": "temp", "value": 21.5}, 21.5),
    ],
)
def test_single_point_endpoints_accept_respond_async(api_client, path, body, value):
    response = post_async(api_client, path, body)
    assert response.status_code == 202, response.content
    batch = IngestBatch.objects.get(pk=response.json()["batch_id"])
    assert batch.points == 1
    [point] = outbox_points(batch)
    assert (point.name, point.value) == (body["name"], value)
    assert MetricPoint.objects.count() == 0


def test_async_request_is_validated_before_the_202(api_client):
    body = {"points": [{"type": "value", "name": "ok", "value": 1}, {"type": "value", "name": "x"}]}
    response = post_async(api_client, "/api/metrics/batch", body)
    assert response.status_code == 400
    assert response["Content-Type"] == PROBLEM
    assert {(e["index"], e["field"]) for e in response.json()["errors"]} == {(1, "value")}
    assert "Preference-Applied" not in response
    assert IngestBatch.objects.count() == 0


@pytest.mark.parametrize(
    ("prefer", "status"),
    [
        ("respond-async", 202),
        ("RESPOND-ASYNC", 202),
        ("wait=10, respond-async", 202),
        ("respond-async; foo=bar", 202),
        ("return=minimal", 201),
        ("respond-asynchronously", 201),
        ("", 201),
    ],
)
def test_only_the_respond_async_preference_makes_ingestion_asynchronous(api_client, prefer, status):
    response = post(api_client, "/api/metrics/counter", {"name": "hits"}, Prefer=prefer)
    assert response.status_code == status, response.content
    assert IngestBatch.objects.count() == (status == 202)
    assert MetricPoint.objects.count() == (status == 201)
    assert ("Preference-Applied" in response) == (status == 202)


def test_idempotent_retry_replays_the_202_and_queues_one_batch(
    api_client, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        first = post_async(
            api_client, "/api/metrics/counter", {"name": "n"}, **{"Idempotency-Key": "k1"}
        )
        again = post_async(
            api_client, "/api/metrics/counter", {"name": "n"}, **{"Idempotency-Key": "k1"}
        )
    assert (first.status_code, again.status_code) == (202, 202)
    assert again.json() == first.json()
    assert again["Idempotent-Replayed"] == "true"
    assert again["Preference-Applied"] == "respond-async"
    assert again["Location"] == first["Location"]
    assert IngestBatch.objects.count() == 1
    assert len(callbacks) == 1


def test_the_batch_and_its_task_are_sent_only_after_commit_and_carry_the_id_only(
    api_client, queue_name, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = post_async(api_client, "/api/metrics/counter", {"name": "n"})
        assert queued_batch_ids(queue_name) == []
    for callback in callbacks:
        callback()
    assert queued_batch_ids(queue_name) == [response.json()["batch_id"]]


def test_status_endpoint_describes_a_pending_batch(api_client):
    batch_id = post_async(api_client, "/api/metrics/counter", {"name": "n"}).json()["batch_id"]
    response = api_client.get(f"/api/batches/{batch_id}")
    assert response.status_code == 200
    body = response.json()
    created = IngestBatch.objects.get().created_at
    assert body == {
        "id": batch_id,
        "state": "pending",
        "points": 1,
        "attempts": 0,
        "error": None,
        "created_at": created.isoformat().replace("+00:00", "Z"),
        "processed_at": None,
    }


def test_another_key_gets_404_for_the_batch(api_client, make_api_client):
    batch_id = post_async(api_client, "/api/metrics/counter", {"name": "n"}).json()["batch_id"]
    response = make_api_client().get(f"/api/batches/{batch_id}")
    assert response.status_code == 404
    assert response["Content-Type"] == PROBLEM
    assert api_client.get(f"/api/batches/{batch_id + 1000}").status_code == 404


def test_batch_status_needs_the_write_scope(api_client, make_api_client):
    read_only = make_api_client(scopes=["read"])
    response = read_only.get("/api/batches/1")
    assert response.status_code == 403
    assert response["Content-Type"] == PROBLEM


def test_batch_status_needs_an_api_key(client_anon):
    assert client_anon.get("/api/batches/1").status_code == 401
