"""Per-process id caches stay right across processes: a metric deleted in one process is seen by
every other one before its next write of that name."""

import pytest
from django.db import connection
from django.utils import timezone

from metrics import storage
from metrics.models import Metric, MetricPoint, Series
from tests.helpers import post, post_async, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]


def _orphans() -> dict[str, int]:
    """Rows whose metric or series is gone, per table."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM metric_points p WHERE NOT EXISTS"
            " (SELECT 1 FROM metrics m WHERE m.id = p.metric_id)"
            " OR NOT EXISTS (SELECT 1 FROM series s WHERE s.id = p.series_id)"
        )
        points = cursor.fetchone()[0]
        counts = {"metric_points": points}
        for table, _ in storage.ROLLUP_TABLES:
            cursor.execute(
                f"SELECT count(*) FROM {table} r WHERE NOT EXISTS"
                " (SELECT 1 FROM series s WHERE s.id = r.series_id)"
            )
            counts[table] = cursor.fetchone()[0]
        cursor.execute(
            "SELECT count(*) FROM series s WHERE NOT EXISTS"
            " (SELECT 1 FROM metrics m WHERE m.id = s.metric_id)"
        )
        counts["series"] = cursor.fetchone()[0]
    return counts


def _write_through_the_worker(client, worker, points: list[dict]) -> None:
    response = post_async(client, "/api/metrics/batch", {"points": points})
    assert response.status_code == 202, response.content
    url = response.json()["status_url"]
    wait_for(
        lambda: client.get(url).json()["state"] == "done",
        timeout=30,
        what="the worker to write the batch",
        log=worker.log,
    )


@pytest.mark.parametrize("points", [1, 100], ids=["one-statement", "copy"])
def test_a_metric_deleted_in_one_process_is_recreated_by_another(
    api_client, start_worker, clean_point_tables, points
):
    worker = start_worker()
    batch = [{"type": "value", "name": "gone", "value": 1.0, "tags": {"h": "a"}}] * points
    # The worker writes the metric and caches its metric and series ids.
    _write_through_the_worker(api_client, worker, batch)
    old = Metric.objects.get(name="gone")
    # This process (the web) deletes it; the worker's caches still hold the old ids.
    purge_id = storage.metric_and_series_delete(old.pk, now=timezone.now())
    assert not Metric.objects.filter(name="gone").exists()
    # The worker's next write of that name recreates it cleanly.
    _write_through_the_worker(api_client, worker, batch)
    assert storage.metric_rows_purge(purge_id)  # what a worker does after the delete
    new = Metric.objects.get(name="gone")
    assert new.pk != old.pk
    assert Series.objects.get().metric_id == new.pk
    assert MetricPoint.objects.filter(metric_id=new.pk).count() == points
    assert MetricPoint.objects.count() == points
    assert _orphans() == dict.fromkeys(_orphans(), 0)


def test_this_process_recreates_a_metric_another_deleted_behind_its_cache(api_client):
    """The same from the web's side: its cache is stale after a delete by another process
    (simulated by deleting with raw SQL, which clears no cache here)."""
    assert post(api_client, "/api/metrics/counter", {"name": "c"}).status_code == 201
    old = Metric.objects.get(name="c").pk
    with connection.cursor() as cursor:
        for table, _ in storage.ROLLUP_TABLES:
            cursor.execute(f"DELETE FROM {table}")
        cursor.execute("DELETE FROM metric_points")
        cursor.execute("DELETE FROM series")
        cursor.execute("DELETE FROM metrics")
    assert post(api_client, "/api/metrics/counter", {"name": "c", "value": 2}).status_code == 201
    metric = Metric.objects.get(name="c")
    assert metric.pk != old
    assert list(MetricPoint.objects.values_list("metric_id", "value")) == [(metric.pk, 2.0)]
    assert _orphans() == dict.fromkeys(_orphans(), 0)
