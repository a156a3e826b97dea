"""The multiprocess files: GET /metrics over HTTP sums real gunicorn workers exactly; the files
of processes that are gone are removed when the service starts."""

from __future__ import annotations

import os
import shutil
import time

import pytest
from prometheus_client.multiprocess import MultiProcessCollector

from tests.processes import samples, scrape_text, value

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
