import json
import threading

import pytest
from django.db import connection
from rest_framework.test import APIClient

from metrics.models import Metric, MetricPoint

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("clean_point_tables"),
]


def test_concurrent_first_writes_with_different_types_one_wins_one_409(make_api_client):
    raw = make_api_client().raw_key
    barrier = threading.Barrier(8)
    statuses: list[int] = []

    def write(path: str, body: dict) -> None:
        client = APIClient()
        client.credentials(HTTP_X_API_KEY=raw)
        barrier.wait()
        try:
            response = client.post(path, json.dumps(body), content_type="application/json")
            statuses.append(response.status_code)
        finally:
            connection.close()

    threads = [
        threading.Thread(target=write, args=("/api/metrics/counter", {"name": "race"}))
        if i % 2
        else threading.Thread(
            target=write, args=("/api/metrics/value", {"name": "race", "value": 1})
        )
        for i in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    metric = Metric.objects.get(name="race")
    assert sorted(set(statuses)) == [201, 409]
    assert statuses.count(201) == 4 and statuses.count(409) == 4
    assert MetricPoint.objects.filter(metric_id=metric.id).count() == 4


def test_a_write_needing_nothing_new_is_one_statement_without_a_transaction(
    make_api_client, monkeypatch
):
    client = make_api_client()
    body = json.dumps({"name": "fast", "value": 2, "tags": {"h": "a"}})
    first = client.post("/api/metrics/counter", body, content_type="application/json")
    assert first.status_code == 201  # creates the metric and series, in a transaction

    def no_transaction(*args, **kwargs):
        raise AssertionError("the known-series path must not open a transaction")

    monkeypatch.setattr("metrics.services.transaction.atomic", no_transaction)
    for _ in range(3):
        again = client.post("/api/metrics/counter", body, content_type="application/json")
        assert again.status_code == 201
    from metrics.models import RollupHour

    assert MetricPoint.objects.filter(metric_id=Metric.objects.get(name="fast").id).count() == 4
    rollup = RollupHour.objects.get()
    assert (rollup.count, rollup.sum) == (4, 8.0)
