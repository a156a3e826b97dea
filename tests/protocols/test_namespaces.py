"""A key bound to namespaces, through the real clients of each protocol: the points outside
are refused and reported as the protocol reports any refusal, the rest is stored."""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime, timedelta

import pytest
import requests
from influxdb_client import InfluxDBClient, Point, WritePrecision
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.rest import ApiException
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricExportResult, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource

from apikeys.services import apikey_create
from metrics.models import Metric, MetricPoint
from protocols.models import CumulativeStream

from .clients import RecordingExporter, write_request
from .clients import post as remote_write_post

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("clean_point_tables"),
]


@pytest.fixture
def checkout_key() -> str:
    """A key that may write only checkout.* and shared.web.* metrics."""
    return apikey_create(
        name="checkout",
        scopes=["read", "write"],
        rate_limit=1_000_000,
        namespaces=["checkout.", "shared.web."],
    )[1]


def stored_names() -> set[str]:
    return set(MetricPoint.objects.values_list("metric__name", flat=True))


def test_influxdb_client_partial_write_names_the_lines_outside(live_server, checkout_key):
    when = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    client = InfluxDBClient(url=live_server.url, token=checkout_key, org="acme", timeout=30_000)
    with client, pytest.raises(ApiException) as refused:
        client.write_api(write_options=SYNCHRONOUS).write(
            bucket="telegraf",
            record=[
                Point("checkout").field("latency", 12.5).time(when, WritePrecision.S),
                Point("payroll").field("total", 99).time(when, WritePrecision.S),
                Point("shared.web").field("hits", 3).time(when, WritePrecision.S),
            ],
            write_precision=WritePrecision.S,
        )
    assert refused.value.status == 422
    assert "line 2: metric 'payroll.total' is outside this token's namespaces" in (
        refused.value.body.decode() if isinstance(refused.value.body, bytes) else refused.value.body
    )
    assert stored_names() == {"checkout.latency", "shared.web.hits"}
    assert not Metric.objects.filter(name__startswith="payroll").exists()


def test_opentelemetry_sdk_export_stores_inside_and_reports_the_rest(
    live_server, checkout_key, caplog
):
    exporter = RecordingExporter(
        endpoint=f"{live_server.url}/v1/metrics",
        headers={"Authorization": f"Bearer {checkout_key}"},
    )
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=math.inf)
    provider = MeterProvider(
        metric_readers=[reader], resource=Resource.create({"service.name": "checkout"})
    )
    meter = provider.get_meter("shop", "1.0")
    meter.create_counter("checkout.orders").add(5, {"region": "eu"})
    meter.create_counter("payroll.runs").add(2)  # cumulative: a stream, outside
    meter.create_up_down_counter("payroll.headcount").add(7)
    with caplog.at_level("WARNING"):
        provider.force_flush()
    provider.shutdown()

    # A partial success is a success to the SDK; it logs what was rejected.
    assert exporter.results == [MetricExportResult.SUCCESS]
    assert stored_names() == {"checkout.orders"}
    assert sorted(MetricPoint.objects.values_list("value", flat=True)) == [5.0]
    assert not Metric.objects.filter(name__startswith="payroll").exists()
    assert set(CumulativeStream.objects.values_list("name", flat=True)) <= {"checkout.orders"}


def test_otlp_partial_success_counts_the_points_outside(live_server, checkout_key):
    now_ns = time.time_ns()

    def gauge(name: str) -> dict:
        return {
            "name": name,
            "gauge": {"dataPoints": [{"asDouble": 1.5, "timeUnixNano": str(now_ns)}]},
        }

    body = {
        "resourceMetrics": [
            {
                "scopeMetrics": [
                    {"metrics": [gauge("checkout.cart"), gauge("payroll.x"), gauge("payroll.y")]}
                ]
            }
        ]
    }
    response = requests.post(
        f"{live_server.url}/v1/metrics",
        json=body,
        headers={"Authorization": f"Bearer {checkout_key}"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    partial = response.json()["partialSuccess"]
    assert partial["rejectedDataPoints"] == "2"
    assert "'payroll.x' is outside this key's namespaces" in partial["errorMessage"]
    assert stored_names() == {"checkout.cart"}


def test_remote_write_is_400_for_the_series_outside_and_stores_the_rest(live_server, checkout_key):
    now_ms = int(time.time() * 1000)
    body = write_request(
        [
            ({"__name__": "checkout.requests", "job": "a"}, [(4.0, now_ms)]),
            ({"__name__": "payroll.requests", "job": "a"}, [(9.0, now_ms)]),
            ({"__name__": "shared.web.up", "job": "a"}, [(1.0, now_ms)]),
        ]
    )
    response = remote_write_post(live_server.url, checkout_key, body)
    assert response.status_code == 400
    problem = response.json()
    assert problem["stored"] == 2
    assert problem["refused_series"] == 1
    assert "'payroll.requests' is outside this key's namespaces" in problem["detail"]
    assert stored_names() == {"checkout.requests", "shared.web.up"}
