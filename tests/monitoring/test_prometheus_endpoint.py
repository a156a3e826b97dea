"""GET /metrics over HTTP, from real gunicorn workers and Celery pool processes, summed."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from datetime import timedelta

import pytest
from django.utils import timezone
from prometheus_client.multiprocess import MultiProcessCollector

from apikeys.services import apikey_create
from metrics.models import IngestBatch
from tests.helpers import wait_for

from .conftest import ROOT, samples, scrape_text, value

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

DURATION_COUNT = "glowing_fiesta_request_duration_seconds_count"


def _route_counts_per_file(multiproc_dir, route: str) -> list[float]:
    """The request count of `route` in each process's histogram file, one by one."""
    counts = []
    for path in sorted(multiproc_dir.glob("histogram_*.db")):
        total = 0.0
        for family in MultiProcessCollector.merge([str(path)]):
            for sample in family.samples:
                if sample.name == DURATION_COUNT and sample.labels.get("route") == route:
                    total += sample.value
        counts.append(total)
    return counts


def test_request_count_over_two_gunicorn_workers_is_exact(stack):
    service = stack.serve(workers=2)
    n = 60
    for i in range(n):
        response = service.request(
            "POST",
            "/api/metrics/counter",
            {"name": "monitored.hits"},
            **{"X-API-Key": stack.write_key},
        )
        assert response.status == 201, response.body
        if i % 10 == 0:
            time.sleep(0.05)  # let the other worker win an accept now and then
    parsed = samples(scrape_text(service, stack.read_key))
    labels = {"method": "POST", "route": "metric-counter", "status": "201"}
    assert value(parsed, DURATION_COUNT, **labels) == n
    assert value(parsed, "glowing_fiesta_points_ingested_total", path="sync") == n
    # Both workers served some of them: the exact total is a sum over processes.
    per_process = [c for c in _route_counts_per_file(stack.multiproc_dir, "metric-counter") if c]
    assert len(per_process) == 2, per_process
    assert sum(per_process) == n
    # Every write was timed, one point each.
    assert value(parsed, "glowing_fiesta_db_write_latency_seconds_count") >= n
    assert value(parsed, "glowing_fiesta_db_write_points_bucket", le="1.0") >= n
    # The scrape itself is counted under its own route.
    again = samples(scrape_text(service, stack.read_key))
    scrapes = {"method": "GET", "route": "prometheus-metrics", "status": "200"}
    assert value(again, DURATION_COUNT, **scrapes) == 1


def test_a_bad_write_raises_ingestion_failures_by_exactly_one(stack):
    service = stack.serve(workers=2)
    key = {"X-API-Key": stack.write_key}
    before = samples(scrape_text(service, stack.read_key))
    response = service.request("POST", "/api/metrics/value", {"name": "bad", "value": "x"}, **key)
    assert response.status == 400
    after = samples(scrape_text(service, stack.read_key))
    failures = "glowing_fiesta_ingestion_failures_total"
    assert value(after, failures, reason="invalid") == value(before, failures, reason="invalid") + 1
    others = {
        k: v for k, v in after.items() if k[0] == failures and k[1] != (("reason", "invalid"),)
    }
    assert all(v == before.get(k, 0) for k, v in others.items()), others
    assert value(after, DURATION_COUNT, method="POST", route="metric-value", status="400") == 1


def _batch(name: str, kind: str = "counter", size: int = 3) -> dict:
    return {"points": [{"type": kind, "name": name, "value": 1} for _ in range(size)]}


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


def test_a_retention_run_raises_retention_deleted(stack):
    key, _ = apikey_create(name="old", scopes=["write"])
    old = timezone.now() - timedelta(days=3)
    IngestBatch.objects.create(
        api_key=key, state="done", payload=[], points=0, created_at=old, updated_at=old,
        processed_at=old,
    )  # fmt: skip
    service = stack.serve(workers=1)
    before = samples(scrape_text(service, stack.read_key))
    assert value(before, "glowing_fiesta_retention_last_success_timestamp_seconds") == 0
    started = time.time()
    result = stack.manage("apply_retention")
    assert result.returncode == 0, result.stderr
    after = samples(scrape_text(service, stack.read_key))
    deleted = "glowing_fiesta_retention_deleted_total"
    assert value(after, deleted, table="ingest_batches") == 1
    assert value(before, deleted, table="ingest_batches") == 0
    last = value(after, "glowing_fiesta_retention_last_success_timestamp_seconds")
    assert started <= last <= time.time()


ROUTE_NAMES = {
    "healthz", "readyz", "prometheus-metrics", "metric-counter", "metric-value", "metric-batch",
    "ingest-batch", "metric-query", "apikey-me", "unmatched",
}  # fmt: skip


def test_no_label_holds_an_api_key_or_a_raw_path(stack):
    service = stack.serve(workers=1)
    secret = "s3cr3t-" + stack.write_key[3:11].lower()
    key = {"X-API-Key": stack.write_key}
    service.request("POST", "/api/metrics/counter", {"name": f"{secret}.name"}, **key)
    service.request("GET", f"/api/metrics/{secret}.name", **key)
    service.request("GET", f"/api/metrics/{secret}.missing", **key)
    service.request("GET", f"/no/such/{secret}/path")
    service.request("GET", f"/api/metrics/counter?api_key={stack.write_key}")
    service.request("GET", "/api/metrics/counter", Authorization=f"Bearer {stack.write_key}x")
    text = scrape_text(service, stack.read_key)
    assert stack.write_key not in text
    assert stack.read_key not in text
    assert stack.write_key[3:11] not in text  # not even the public prefix
    assert secret not in text
    assert "/no/such" not in text
    parsed = samples(text)
    routes = {
        dict(labels).get("route") for name, labels in parsed if name.startswith(DURATION_COUNT)
    }
    assert routes <= ROUTE_NAMES, routes
    assert "unmatched" in routes
    auth = "glowing_fiesta_auth_failures_total"
    assert value(parsed, auth, reason="in_url") == 1
    assert value(parsed, auth, reason="invalid") == 1


def test_promtool_accepts_the_live_metrics_the_rules_and_the_scrape_config(stack):
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: apt-get install prometheus (bash .ci/run does)"
    service = stack.serve(workers=1)
    service.request("POST", "/api/metrics/counter", {"name": "x"}, **{"X-API-Key": stack.write_key})
    service.request("GET", "/api/metrics/x?aggregation=p95", **{"X-API-Key": stack.write_key})
    text = scrape_text(service, stack.read_key)
    assert "glowing_fiesta_aggregation_latency_seconds_bucket" in text
    checked = subprocess.run(  # noqa: S603
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert not checked.stdout.strip(), checked.stdout  # no lint complaint either
    rules = subprocess.run(  # noqa: S603
        [promtool, "check", "rules", str(ROOT / "deploy" / "prometheus" / "alerts.yml")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert rules.returncode == 0, rules.stdout + rules.stderr
    assert re.search(r"SUCCESS: [1-9]\d* rules found", rules.stdout), rules.stdout
    config = subprocess.run(  # noqa: S603
        [promtool, "check", "config", "--syntax-only", str(ROOT / "deploy" / "prometheus" / "prometheus.yml")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert config.returncode == 0, config.stdout + config.stderr


def test_gunicorn_start_removes_the_files_of_processes_that_are_gone(stack):
    # A management command records too (its histogram files are made when the figures are
    # defined), then exits: its files belong to a dead process.
    assert stack.manage("check").returncode == 0
    dead = sorted(stack.multiproc_dir.glob("*.db"))
    assert dead
    live = stack.multiproc_dir / f"counter_{os.getpid()}.db"
    shutil.copy(dead[0], live)
    stack.serve(workers=1)
    assert not any(path.exists() for path in dead)
    assert live.exists()


def test_devstack_gives_every_run_an_empty_multiprocess_directory(monkeypatch, tmp_path):
    import contextlib

    from glowing_fiesta import devstack

    monkeypatch.setattr(devstack, "DATA", tmp_path / "data")
    monkeypatch.setenv("DATABASE_URL", "postgresql://unused")
    monkeypatch.setenv("REDIS_URL", "redis://unused")
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    with contextlib.ExitStack() as stack:
        first = devstack.service_env(stack)["PROMETHEUS_MULTIPROC_DIR"]
        assert first.startswith(str(tmp_path / "data"))
        assert os.listdir(first) == []
    assert not os.path.exists(first)
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    with contextlib.ExitStack() as stack:
        assert devstack.service_env(stack)["PROMETHEUS_MULTIPROC_DIR"] == str(tmp_path)
