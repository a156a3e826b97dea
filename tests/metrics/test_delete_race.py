"""A writer in another process racing DELETE /api/metrics/{name} leaves no orphan row."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from metrics import purges
from metrics.models import Metric, MetricPurge
from tests.processes import worker_database_url

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.worker,
    pytest.mark.usefixtures("clean_point_tables"),
]

ROOT = Path(__file__).resolve().parents[2]
WRITE_SECONDS = 6
DELETES = 4

# Writes one counter point at a time to metric "race" (three tag sets) until the time is up,
# through the same service as the API; prints how many points it stored. "cold" forgets the
# process's metric and series ids before every write, "warm" keeps them as a server does.
WRITER = """
import os, sys, time
from datetime import UTC, datetime
import django
django.setup()
from metrics import caches
from metrics.services import PointInput, points_ingest
seconds, mode = float(sys.argv[1]), sys.argv[2]
deadline = time.monotonic() + seconds
written = 0
while time.monotonic() < deadline:
    if mode == "cold":
        caches.caches_clear()
    tags = {"w": str(written % 3)}
    points_ingest(points=[PointInput("counter", "race", 1.0, datetime.now(UTC), tags)])
    written += 1
    time.sleep(0.002)
print(written)
"""


def wait_for(predicate, *, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def metric_with_points(name: str) -> bool:
    metric = Metric.objects.filter(name=name).first()
    return metric is not None and points_of(metric.id) >= 10


def points_of(metric_id: int) -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM metric_points WHERE metric_id = %s", [metric_id])
        return cursor.fetchone()[0]


def orphans() -> dict[str, int]:
    """Rows whose metric or series no longer exists (or belongs to another metric)."""
    checks = {
        "metric_points": """SELECT count(*) FROM metric_points p WHERE NOT EXISTS (
            SELECT 1 FROM series s JOIN metrics m ON m.id = s.metric_id
            WHERE s.id = p.series_id AND m.id = p.metric_id)""",
        **{
            table: f"""SELECT count(*) FROM {table} r
                WHERE NOT EXISTS (SELECT 1 FROM series s WHERE s.id = r.series_id)"""
            for table in ("metric_rollup_minute", "metric_rollup_hour", "metric_rollup_day")
        },
    }
    out = {}
    with connection.cursor() as cursor:
        for name, sql in checks.items():
            cursor.execute(sql)
            out[name] = cursor.fetchone()[0]
    return out


def rollups_match_points(metric_id: int) -> bool:
    with connection.cursor() as cursor:
        counts = [points_of(metric_id)]
        for table in ("metric_rollup_minute", "metric_rollup_hour", "metric_rollup_day"):
            cursor.execute(
                f"SELECT coalesce(sum(r.count), 0) FROM {table} r "
                "JOIN series s ON s.id = r.series_id WHERE s.metric_id = %s",
                [metric_id],
            )
            counts.append(cursor.fetchone()[0])
    return len(set(counts)) == 1


def race(make_api_client, tmp_path: Path, mode: str) -> None:
    admin = make_api_client(scopes=["admin"])
    env = dict(os.environ)
    env.update(
        DATABASE_URL=worker_database_url(),
        REDIS_URL=settings.REDIS_URL,
        DJANGO_SETTINGS_MODULE="glowing_fiesta.settings",
        PYTHONPATH=str(ROOT),
    )
    log = tmp_path / "writer.log"
    with log.open("w") as out:
        writer = subprocess.Popen(  # noqa: S603 - our own interpreter and code
            [sys.executable, "-c", WRITER, str(WRITE_SECONDS), mode],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deleted_ids = []
        for _ in range(DELETES):
            # Stops early when the writes no longer recreate the metric (ids cached stale).
            if not wait_for(lambda: metric_with_points("race"), timeout=WRITE_SECONDS):
                break
            metric_id = Metric.objects.get(name="race").id
            response = admin.delete("/api/metrics/race")
            assert response.status_code == 204, response.content
            deleted_ids.append(metric_id)
        assert writer.wait(WRITE_SECONDS + 30) == 0, log.read_text()
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait(10)
    assert deleted_ids
    assert int(log.read_text().split()[-1]) > 0
    # What the workers do after each delete: the purges, once the writer has stopped.
    purge_ids = list(MetricPurge.objects.values_list("pk", flat=True))
    assert len(purge_ids) == len(deleted_ids)
    assert all(purges.purge_run(purge_id=purge_id) for purge_id in purge_ids)
    assert orphans() == dict.fromkeys(orphans(), 0)
    assert len(deleted_ids) == DELETES
    survivor = Metric.objects.get(name="race")  # recreated by the writes after the last delete
    assert survivor.id not in deleted_ids
    assert points_of(survivor.id) > 0
    assert rollups_match_points(survivor.id)
    for metric_id in deleted_ids:
        assert points_of(metric_id) == 0


def test_a_writer_resolving_the_metric_on_every_write_leaves_no_orphan(make_api_client, tmp_path):
    race(make_api_client, tmp_path, "cold")


def test_a_writer_with_warm_caches_leaves_no_orphan(make_api_client, tmp_path):
    race(make_api_client, tmp_path, "warm")
