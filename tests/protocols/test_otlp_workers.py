"""Through a real gunicorn with two workers: the same cumulative export sent at once to both
counts once (the stream state lives in PostgreSQL, locked for the length of each write), and a
chunked body is read whole."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
from django.conf import settings
from django.db import connection
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricExportResult
from opentelemetry.sdk.resources import Resource

from apikeys.services import apikey_create
from glowing_fiesta.devstack import free_port, wait_or_kill
from metrics.models import MetricPoint
from tests.processes import healthz_wait

from .clients import post_chunked, write_request

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.gunicorn,
    pytest.mark.usefixtures("clean_point_tables"),
]

ROOT = Path(__file__).resolve().parents[2]
ROUNDS_MAX = 20
ROUNDS_ON_TWO_WORKERS = 3


@pytest.fixture
def server(tmp_path):
    """gunicorn with two sync workers on the test database; yields (url, access log path)."""
    params = connection.get_connection_params()
    database_url = (
        f"postgresql://{params.get('user', '')}@{params.get('host', '127.0.0.1')}:"
        f"{params.get('port', 5432)}/{params['dbname']}"
    )
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "DJANGO_SECRET_KEY": settings.SECRET_KEY,
        "API_KEY_PEPPER": settings.API_KEY_PEPPER,
        "DJANGO_SETTINGS_MODULE": "glowing_fiesta.settings",
    }
    port = free_port()
    access_log = tmp_path / "access.log"
    command = [
        sys.executable, "-m", "gunicorn", "-c", str(ROOT / "deploy" / "gunicorn.conf.py"),
        "--bind", f"127.0.0.1:{port}", "--workers", "2",
        "--access-logfile", str(access_log), "--access-logformat", "%(p)s %(U)s %(s)s",
        "glowing_fiesta.wsgi:application",
    ]  # fmt: skip
    process = subprocess.Popen(  # noqa: S603 - a fixed command line
        command,
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        healthz_wait(port, process, timeout=30)
        yield f"http://127.0.0.1:{port}", access_log
    finally:
        process.terminate()
        wait_or_kill(process, 20)


def _export_pids(access_log: Path, skip: int) -> list[str]:
    lines = access_log.read_text().splitlines()[skip:]
    return [line.split()[0] for line in lines if " /v1/metrics " in f" {line} "]


def test_one_export_sent_to_two_workers_at_once_counts_once(server):
    url, access_log = server
    key = apikey_create(name="otel", scopes=["read", "write"], rate_limit=1_000_000)[1]
    reader = InMemoryMetricReader()
    provider = MeterProvider(
        metric_readers=[reader], resource=Resource.create({"service.name": "checkout"})
    )
    orders = provider.get_meter("shop").create_counter("orders.placed")
    exporters = [
        OTLPMetricExporter(endpoint=f"{url}/v1/metrics", headers={"X-API-Key": key})
        for _ in range(2)
    ]
    expected = 0
    on_two_workers = 0
    for n in range(ROUNDS_MAX):
        orders.add(n + 1, {"round": str(n)})
        expected += n + 1
        data = reader.get_metrics_data()  # cumulative: every round's total so far
        barrier = threading.Barrier(2)
        results: list[MetricExportResult] = []

        def send(exporter: OTLPMetricExporter, data=data, barrier=barrier, results=results):
            barrier.wait()
            results.append(exporter.export(data))

        skip = len(access_log.read_text().splitlines()) if access_log.exists() else 0
        threads = [threading.Thread(target=send, args=(e,)) for e in exporters]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert results == [MetricExportResult.SUCCESS] * 2
        # gunicorn writes the access line after the response: wait for both.
        deadline = time.monotonic() + 10
        while len(pids := _export_pids(access_log, skip)) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(pids) == 2
        on_two_workers += len(set(pids)) == 2
        if on_two_workers >= ROUNDS_ON_TWO_WORKERS:
            break
    provider.shutdown()

    assert on_two_workers >= ROUNDS_ON_TWO_WORKERS
    response = requests.get(
        f"{url}/api/metrics/orders.placed",
        params={"aggregation": "sum", "interval": "day"},
        headers={"X-API-Key": key},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    assert sum(b["value"] for b in response.json()["buckets"]) == expected


def test_a_chunked_body_without_content_length_is_read_whole(server):
    url, _ = server
    key = apikey_create(name="prometheus", scopes=["read", "write"], rate_limit=1_000_000)[1]
    now_ms = int(time.time() * 1000)
    body = write_request(
        [({"__name__": "queue_depth", "queue": f"q{n}"}, [(n, now_ms)]) for n in range(300)]
    )

    response = post_chunked(url, key, (body[i : i + 1000] for i in range(0, len(body), 1000)))

    assert response.status == 204, response.read()
    assert MetricPoint.objects.count() == 300


def test_remote_write_without_a_content_type_is_415_naming_the_missing_header(server):
    url, _ = server
    key = apikey_create(name="prometheus", scopes=["write"], rate_limit=1_000_000)[1]
    host, port = url.removeprefix("http://").split(":")

    # gunicorn, unlike the test server, leaves a missing Content-Type missing.
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.request(
        "POST",
        "/api/v1/write",
        body=b"\x00",
        headers={"Content-Encoding": "snappy", "X-API-Key": key},
    )
    response = conn.getresponse()

    assert response.status == 415
    assert "Content-Type is missing" in json.loads(response.read())["detail"]
