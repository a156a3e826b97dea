"""The load test sends only valid traffic: a short headless run against a live server fails nothing.

locust is run in a subprocess: importing it here would monkey-patch the test process with gevent.
The short run sets GF_EVERY_TASK_AT_START, so every user sends each route of the mix once as it
starts: a route of weight 1 in 19 is sent whatever the host's speed and the draw of tasks.
"""

import json
import os
import subprocess
import sys

import pytest

from apikeys.services import apikey_create
from bench._common import ROOT
from metrics.models import Metric, MetricPoint
from tests.helpers import truncate_point_tables

# The live server answers from another thread, so the key must be committed, not in a test
# transaction.
pytestmark = pytest.mark.django_db(transaction=True)

# Django's flush between transactional tests skips these unmanaged tables.
ROUTES = {
    ("POST", "/api/metrics/counter"),
    ("POST", "/api/metrics/value"),
    ("POST", "/api/metrics/batch"),
    ("POST", "/api/metrics/batch (async)"),
    ("GET", "/api/metrics/[name]"),
}


@pytest.fixture(autouse=True)
def _empty_point_tables():
    yield
    truncate_point_tables()


def _locust(host: str, key: str) -> subprocess.CompletedProcess:
    command = [
        sys.executable, "-m", "locust", "-f", str(ROOT / "locustfile.py"),
        "--host", host, "--headless", "-u", "6", "-r", "6", "-t", "5s",
        "--stop-timeout", "5", "--json", "--skip-log",
    ]  # fmt: skip
    env = {**os.environ, "GF_API_KEY": key, "GF_EVERY_TASK_AT_START": "1"}
    return subprocess.run(  # noqa: S603 - a fixed command line
        command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )


def test_locust_mix_runs_against_a_live_server_without_a_failed_request(live_server):
    _, raw = apikey_create(name="locust", scopes=["read", "write"], rate_limit=1_000_000)

    result = _locust(live_server.url, raw)

    assert result.returncode == 0, result.stderr[-3000:]
    stats = {(row["method"], row["name"]): row for row in json.loads(result.stdout)}
    assert set(stats) == ROUTES
    for route, row in stats.items():
        assert row["num_requests"] > 0, route
        assert row["num_failures"] == 0, (route, row)
    assert set(Metric.objects.values_list("type", flat=True)) == {"counter", "value"}
    batch_metrics = {"queue.depth", "cpu.percent", "memory.used_mb", "jobs.processed"}
    assert MetricPoint.objects.filter(metric__name__in=batch_metrics).exists()


def test_locust_without_a_key_stops_at_once_with_an_error(live_server):
    env = {k: v for k, v in os.environ.items() if k != "GF_API_KEY"}
    command = [
        sys.executable, "-m", "locust", "-f", str(ROOT / "locustfile.py"),
        "--host", live_server.url, "--headless", "-u", "1", "-r", "1", "-t", "30s",
    ]  # fmt: skip

    result = subprocess.run(  # noqa: S603 - a fixed command line
        command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=25, check=False
    )

    assert result.returncode != 0
    assert "GF_API_KEY is not set" in result.stderr
    assert not MetricPoint.objects.exists()
