"""DELETE /api/metrics/{name}: the admin scope, hidden in one transaction, nothing left behind
once purged."""

import time
from datetime import UTC, datetime, timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection

from apikeys import keyformat
from apikeys.models import ApiKey
from metrics import purges
from metrics.models import Metric, MetricPurge
from metrics.services import PointInput, points_ingest

pytestmark = pytest.mark.django_db

PROBLEM = "application/problem+json"
TABLES = ("metric_points", "metric_rollup_minute", "metric_rollup_hour", "metric_rollup_day")


@pytest.fixture
def admin(make_api_client):
    return make_api_client(scopes=["admin"])


def ingest(name, *points, kind="counter"):
    """points: (value, when, tags)."""
    points_ingest(points=[PointInput(kind, name, *p) for p in points])


def rows_of(metric_id: int, series_ids: list[int]) -> dict[str, int]:
    """How many rows of each table belong to the metric (by id) or its series."""
    out = {}
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM metrics WHERE id = %s", [metric_id])
        out["metrics"] = cursor.fetchone()[0]
        cursor.execute("SELECT count(*) FROM series WHERE metric_id = %s", [metric_id])
        out["series"] = cursor.fetchone()[0]
        cursor.execute("SELECT count(*) FROM metric_points WHERE metric_id = %s", [metric_id])
        out["metric_points"] = cursor.fetchone()[0]
        for table in TABLES[1:]:
            cursor.execute(
                f"SELECT count(*) FROM {table} WHERE series_id = ANY(%s)",
                [series_ids],
            )
            out[table] = cursor.fetchone()[0]
    return out


def purge_all() -> int:
    """Run every pending purge here, as a worker would; return how many were done."""
    ids = list(MetricPurge.objects.values_list("pk", flat=True))
    return sum(purges.purge_run(purge_id=purge_id) for purge_id in ids)


def spread(now):
    """Points over three days, hours and minutes, in two tag sets."""
    return [
        (1, now - timedelta(days=d, hours=h, minutes=m), {"host": host})
        for d in range(3)
        for h in (0, 5)
        for m in (0, 7)
        for host in ("a", "b")
    ]


def test_delete_removes_the_metric_its_series_points_and_every_rollup(admin, api_client):
    now = datetime.now(UTC)
    ingest("gone", *spread(now))
    ingest("kept", *spread(now))
    gone = Metric.objects.get(name="gone")
    series = list(gone.series.values_list("id", flat=True))
    before = rows_of(gone.id, series)
    assert before["series"] == 2 and before["metric_points"] == 24
    assert all(before[t] >= 6 for t in TABLES[1:]), before  # three resolutions, two series
    kept = Metric.objects.get(name="kept")
    kept_rows = rows_of(kept.id, list(kept.series.values_list("id", flat=True)))

    response = admin.delete("/api/metrics/gone")
    assert response.status_code == 204, response.content
    assert response.content == b""
    # Gone for every read at once; the points and rollups wait for the purge.
    hidden = rows_of(gone.id, series)
    assert hidden["metrics"] == 0 and hidden["series"] == 0
    assert hidden["metric_points"] == 24
    purge = MetricPurge.objects.get()
    assert (purge.metric_id, purge.name, sorted(purge.series_ids)) == (
        gone.id,
        "gone",
        sorted(series),
    )
    assert purge_all() == 1
    assert rows_of(gone.id, series) == dict.fromkeys(before, 0)
    assert not MetricPurge.objects.exists()
    assert purge_all() == 0  # run twice, the second finds nothing
    assert rows_of(kept.id, list(kept.series.values_list("id", flat=True))) == kept_rows

    again = admin.delete("/api/metrics/gone")
    assert again.status_code == 404 and again["Content-Type"] == PROBLEM
    assert again.json()["type"] == "urn:glowing-fiesta:problem:metric-not-found"
    assert api_client.get("/api/metrics/gone").status_code == 404


def test_a_write_after_the_delete_creates_the_metric_anew(admin, api_client):
    ingest("again", (5, datetime.now(UTC), {"k": "v"}))
    old = Metric.objects.get(name="again")
    assert admin.delete("/api/metrics/again").status_code == 204
    response = api_client.post(
        "/api/metrics/value", {"name": "again", "value": 2, "tags": {"k": "v"}}, format="json"
    )
    assert response.status_code == 201  # a new type is fine: it is a new metric
    new = Metric.objects.get(name="again")
    assert new.id != old.id and new.type == "value"
    body = api_client.get("/api/metrics/again", {"aggregation": "sum"}).json()
    assert sum(b["value"] or 0 for b in body["buckets"]) == 2


@pytest.mark.parametrize("scopes", [["read"], ["write"], ["read", "write"]])
def test_delete_needs_the_admin_scope(scopes, make_api_client):
    ingest("safe", (1, datetime.now(UTC), {}))
    response = make_api_client(scopes=scopes).delete("/api/metrics/safe")
    assert response.status_code == 403 and response["Content-Type"] == PROBLEM
    body = response.json()
    assert body["type"] == "urn:glowing-fiesta:problem:insufficient-scope"
    assert "admin" in body["detail"]
    assert Metric.objects.filter(name="safe").exists()


def test_delete_without_a_key_is_401_and_an_unknown_metric_404(client_anon, admin):
    ingest("safe", (1, datetime.now(UTC), {}))
    assert client_anon.delete("/api/metrics/safe").status_code == 401
    missing = admin.delete("/api/metrics/never-was")
    assert missing.status_code == 404 and missing["Content-Type"] == PROBLEM
    assert Metric.objects.filter(name="safe").exists()


def test_an_admin_only_key_cannot_read_or_write(admin):
    ingest("m", (1, datetime.now(UTC), {}))
    assert admin.get("/api/metrics/m").status_code == 403
    assert admin.post("/api/metrics/counter", {"name": "m"}, format="json").status_code == 403


@pytest.mark.parametrize("name", ["a/b/c", "counter", "value", "batch", "with:colon"])
def test_names_with_slashes_and_reserved_names_are_read_and_deleted(name, admin, make_api_client):
    ingest(name, (3, datetime.now(UTC), {}))
    reader = make_api_client(scopes=["read"])
    read = reader.get(f"/api/metrics/{name}", {"aggregation": "sum"})
    assert read.status_code == 200 and read.json()["metric"] == name
    assert reader.delete(f"/api/metrics/{name}").status_code == 403
    assert admin.delete(f"/api/metrics/{name}").status_code == 204
    assert not Metric.objects.filter(name=name).exists()
    assert admin.delete(f"/api/metrics/{name}").status_code == 404


def test_create_api_key_grants_the_admin_scope_only_when_asked():
    out = StringIO()
    call_command("create_api_key", "ops", "--scopes", "admin", stdout=out)
    [raw] = [line for line in out.getvalue().splitlines() if keyformat.looks_like_key(line)]
    assert ApiKey.objects.get(name="ops").scopes == ["admin"]
    call_command("create_api_key", "app", stdout=StringIO())
    assert ApiKey.objects.get(name="app").scopes == ["write", "read"]
    from rest_framework.test import APIClient

    client = APIClient()
    client.credentials(HTTP_X_API_KEY=raw)
    ingest("x", (1, datetime.now(UTC), {}))
    assert client.delete("/api/metrics/x").status_code == 204


def test_a_big_purge_outlasts_the_connections_statement_timeout(admin):
    when = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    ingest("big", (1, when, {}))
    metric = Metric.objects.get(name="big")
    series = metric.series.get().id
    with connection.cursor() as cursor:
        # A metric with many points, written straight into the table (no rollups needed here).
        cursor.execute(
            "INSERT INTO metric_points (metric_id, series_id, value, recorded_at) "
            "SELECT %s, %s, 1, %s FROM generate_series(1, 400000)",
            [metric.id, series, when],
        )
        cursor.execute("SET statement_timeout = '50ms'")  # reverted with the test transaction
        response = admin.delete("/api/metrics/big")
        assert response.status_code == 204, response.content
        assert purge_all() == 1
        cursor.execute("SHOW statement_timeout")
        assert cursor.fetchone()[0] == "50ms"  # the delete's own limit did not leak
        cursor.execute("SET statement_timeout = DEFAULT")
    assert rows_of(metric.id, [series]) == dict.fromkeys(rows_of(metric.id, [series]), 0)


@pytest.mark.worker
def test_a_worker_purges_a_deleted_metric_and_the_answer_does_not_wait_for_it(
    start_worker, make_api_client
):
    worker = start_worker()
    admin = make_api_client(scopes=["admin"])
    when = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    ingest("purged", (1, when, {"h": "a"}), (2, when, {"h": "b"}))
    metric = Metric.objects.get(name="purged")
    series = list(metric.series.values_list("id", flat=True))
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO metric_points (metric_id, series_id, value, recorded_at) "
            "SELECT %s, %s, 1, %s FROM generate_series(1, 200000)",
            [metric.id, series[0], when],
        )
    started = time.monotonic()
    response = admin.delete("/api/metrics/purged")
    answered = time.monotonic() - started
    assert response.status_code == 204
    assert make_api_client().get("/api/metrics/purged").status_code == 404
    deadline = time.monotonic() + 60
    while MetricPurge.objects.exists():
        assert time.monotonic() < deadline, worker.log()
        time.sleep(0.1)
    assert rows_of(metric.id, series) == dict.fromkeys(rows_of(metric.id, series), 0)
    assert "metric purged" in worker.log()
    assert answered < 5  # the 200,000 rows went in the worker, not in the request


@pytest.mark.worker
def test_the_sweeper_runs_a_purge_whose_message_was_lost(start_worker):
    from metrics.tasks import purges_sweep_task

    ingest("lost", (1, datetime.now(UTC), {}))
    metric = Metric.objects.get(name="lost")
    purge_id = storage_delete_without_message(metric.id)
    # Not yet stale: left for its own message.
    assert purges_sweep_task.apply(kwargs={"now": datetime.now(UTC).isoformat()}).get() == 0
    later = datetime.now(UTC) + timedelta(seconds=purges.PURGE_STALE_SECONDS + 1)
    worker = start_worker()
    purges_sweep_task.apply_async(kwargs={"now": later.isoformat()})
    deadline = time.monotonic() + 60
    while MetricPurge.objects.filter(pk=purge_id).exists():
        assert time.monotonic() < deadline, worker.log()
        time.sleep(0.1)
    assert rows_of(metric.id, [])["metric_points"] == 0
    assert "purges run by the sweeper" in worker.log()


def storage_delete_without_message(metric_id: int) -> int:
    from metrics import storage

    return storage.metric_and_series_delete(metric_id, now=datetime.now(UTC))
