"""Idempotency-Key over the real ingestion API: replays, scoping, claims held by a live
transaction, and outcomes that survive whatever happens after their commit."""

import threading

import psycopg
import pytest
from django.db import connection
from django.utils import timezone

from idempotency.models import IdempotencyRecord
from idempotency.services import Outcome, idempotent_run
from metrics.models import IngestBatch, MetricPoint
from tests.helpers import assert_problem, post
from tests.processes import worker_database_url

pytestmark = pytest.mark.django_db

# --- idempotent retries ---------------------------------------------------------------------


def test_a_retry_with_the_same_key_replays_and_stores_nothing_new(api_client):
    body = {"name": "paid", "value": 3}
    first = post(api_client, "/api/metrics/counter", body, **{"Idempotency-Key": "k-1"})
    again = post(api_client, "/api/metrics/counter", body, **{"Idempotency-Key": "k-1"})
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first
    assert MetricPoint.objects.count() == 1


def test_the_same_key_with_another_body_is_422(api_client):
    post(api_client, "/api/metrics/counter", {"name": "a"}, **{"Idempotency-Key": "k"})
    assert_problem(
        post(api_client, "/api/metrics/counter", {"name": "b"}, **{"Idempotency-Key": "k"}), 422
    )
    assert MetricPoint.objects.count() == 1


def test_keys_are_scoped_to_the_api_key(make_api_client):
    one, two = make_api_client(), make_api_client()
    for client in (one, two):
        response = post(
            client, "/api/metrics/counter", {"name": "a"}, **{"Idempotency-Key": "same"}
        )
        assert response.status_code == 201
        assert "Idempotent-Replayed" not in response
    assert MetricPoint.objects.count() == 2


def test_a_replayed_conflict_keeps_its_status(api_client):
    post(api_client, "/api/metrics/counter", {"name": "a"})
    headers = {"Idempotency-Key": "k"}
    first = post(api_client, "/api/metrics/value", {"name": "a", "value": 1}, **headers)
    again = post(api_client, "/api/metrics/value", {"name": "a", "value": 1}, **headers)
    assert_problem(first, 409)
    assert_problem(again, 409)
    assert again["Idempotent-Replayed"] == "true"


@pytest.mark.parametrize(("length", "status"), [(255, 201), (256, 400)])
def test_idempotency_key_length_limit(api_client, length, status):
    response = post(
        api_client, "/api/metrics/counter", {"name": "a"}, **{"Idempotency-Key": "k" * length}
    )
    assert response.status_code == status


def _claim_in_another_session(api_key_id: int, key: str) -> psycopg.Connection:
    """Another server process in the middle of a request with this key: its claim inserted,
    its transaction still open."""
    other = psycopg.connect(worker_database_url())
    other.execute(
        "INSERT INTO idempotency_keys (api_key_id, key, fingerprint, state, headers,"
        " created_at, updated_at) VALUES (%s, %s, 'x', 'in_flight', '{}', now(), now())",
        [api_key_id, key],
    )
    return other


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("clean_point_tables")
def test_a_key_still_in_flight_is_409_after_the_lock_timeout(api_client, settings):
    other = _claim_in_another_session(api_client.api_key.pk, "k")
    try:
        response = post(
            api_client, "/api/metrics/counter", {"name": "a"}, **{"Idempotency-Key": "k"}
        )
        assert_problem(response, 409, "idempotency-in-flight")
        assert response["Retry-After"] == "1"
        assert MetricPoint.objects.count() == 0
    finally:
        other.close()


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("clean_point_tables")
def test_a_claim_dies_with_its_process_and_the_retry_runs_at_once(api_client):
    other = _claim_in_another_session(api_client.api_key.pk, "k")
    other.close()  # the process holding the claim died: its transaction is gone with it
    response = post(api_client, "/api/metrics/counter", {"name": "a"}, **{"Idempotency-Key": "k"})
    assert response.status_code == 201, response.content
    assert MetricPoint.objects.count() == 1


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("clean_point_tables")
def test_a_retry_waiting_on_the_first_request_replays_its_outcome(api_client):
    other = _claim_in_another_session(api_client.api_key.pk, "k")
    # The first request finishes (saves its outcome and commits) while the retry waits.
    timer = threading.Timer(
        0.3,
        lambda: (
            other.execute(
                "UPDATE idempotency_keys SET state = 'done', status_code = 201, fingerprint = %s,"
                " response = '{\"first\": true}'",
                [_digest_of(api_client)],
            ),
            other.commit(),
        ),
    )
    timer.start()
    try:
        response = post(
            api_client, "/api/metrics/counter", {"name": "a"}, **{"Idempotency-Key": "k"}
        )
    finally:
        timer.join()
        other.close()
    assert response.status_code == 201
    assert response.json() == {"first": True}
    assert response["Idempotent-Replayed"] == "true"
    assert MetricPoint.objects.count() == 0


def _digest_of(client) -> str:
    from idempotency.services import fingerprint

    return fingerprint("POST", "/api/metrics/counter", {"name": "a"})


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("clean_point_tables")
def test_a_failure_after_the_commit_keeps_the_outcome(api_key):
    """A worker aborted in an on-commit hook (a broker hanging past gunicorn's timeout) must not
    release a key whose writes committed: the retry replays instead of writing again."""
    key, _ = api_key
    calls = []

    def action() -> Outcome:
        calls.append(1)
        connection.on_commit(lambda: (_ for _ in ()).throw(SystemExit(1)))
        return Outcome(202, {"batch_id": 1})

    with pytest.raises(SystemExit):
        idempotent_run(api_key_id=key.pk, key="k", digest=lambda: "d", now=timezone.now(),
                       action=action)  # fmt: skip
    again = idempotent_run(
        api_key_id=key.pk, key="k", digest=lambda: "d", now=timezone.now(), action=action
    )
    assert again.replayed
    assert again.status == 202
    assert len(calls) == 1
    assert IdempotencyRecord.objects.get().state == IdempotencyRecord.State.DONE


def test_an_async_replay_carries_the_status_url_again(api_client):
    headers = {"Idempotency-Key": "async-1", "Prefer": "respond-async"}
    first = post(api_client, "/api/metrics/counter", {"name": "a"}, **headers)
    again = post(api_client, "/api/metrics/counter", {"name": "a"}, **headers)
    assert first.status_code == again.status_code == 202
    assert again["Location"] == first["Location"] == first.json()["status_url"]
    assert again["Preference-Applied"] == "respond-async"
    assert again["Idempotent-Replayed"] == "true"
    assert IngestBatch.objects.count() == 1


def test_an_expired_key_runs_again(api_client):
    from datetime import timedelta

    post(api_client, "/api/metrics/counter", {"name": "a"}, **{"Idempotency-Key": "old"})
    IdempotencyRecord.objects.update(created_at=timezone.now() - timedelta(hours=24, seconds=1))
    response = post(api_client, "/api/metrics/counter", {"name": "b"}, **{"Idempotency-Key": "old"})
    assert response.status_code == 201
    assert "Idempotent-Replayed" not in response
    assert MetricPoint.objects.count() == 2
