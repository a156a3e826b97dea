import json
import threading

import pytest
from django.db import connection
from rest_framework.test import APIClient

from metrics.models import Metric, MetricPoint

pytestmark = pytest.mark.django_db(transaction=True)


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
