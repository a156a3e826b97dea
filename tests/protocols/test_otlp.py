"""POST /v1/metrics with the real OpenTelemetry SDK and its OTLP/HTTP exporter, against a live
server; what was stored is read back through the query API."""

from __future__ import annotations

import gzip
import json
import time

import pytest
import requests
from google.rpc import status_pb2
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.metrics import Observation
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceResponse,
)

from apikeys.services import apikey_create
from metrics.models import Metric, MetricPoint
from protocols.models import CumulativeStream

from .clients import Sender

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("clean_point_tables"),
]


def query(url: str, key: str, name: str, aggregation: str, *tags: str) -> float | None:
    """The aggregate of a metric over the last day, from GET /api/metrics/{name}."""
    params = [("aggregation", aggregation), ("interval", "day"), *(("tag", t) for t in tags)]
    response = requests.get(
        f"{url}/api/metrics/{name}", params=params, headers={"X-API-Key": key}, timeout=10
    )
    assert response.status_code == 200, response.text
    values = [b["value"] for b in response.json()["buckets"] if b["value"] is not None]
    if aggregation in {"sum", "count"}:
        return sum(values)
    if not values:
        return None
    return {"min": min, "max": max}.get(aggregation, lambda v: v[-1])(values)


def test_cumulative_counter_across_exports_and_a_restart_stores_exactly_the_increments(
    live_server, raw_key
):
    first = Sender(live_server.url, raw_key)
    orders = first.meter.create_counter("orders.placed")
    orders.add(5, {"region": "eu"})
    first.export()
    orders.add(3, {"region": "eu"})
    first.export()
    first.export()  # nothing new: a retry-like repeat of the total 8 adds nothing
    first.stop()
    restarted = Sender(live_server.url, raw_key)  # the sender restarted: a new run from 0
    restarted.meter.create_counter("orders.placed").add(2, {"region": "eu"})
    restarted.export()
    restarted.stop()

    assert query(live_server.url, raw_key, "orders.placed", "sum") == 10  # not 15, not 13
    assert query(live_server.url, raw_key, "orders.placed", "sum", "region:eu") == 10
    assert query(live_server.url, raw_key, "orders.placed", "sum", "service:checkout") == 10
    assert Metric.objects.get(name="orders.placed").type == "counter"
    assert sorted(MetricPoint.objects.values_list("value", flat=True)) == [2, 3, 5]
    assert CumulativeStream.objects.get().last_value == 2


def test_delta_temporality_adds_each_export(live_server, raw_key, monkeypatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", "delta")
    first = Sender(live_server.url, raw_key)
    orders = first.meter.create_counter("orders.placed")
    orders.add(5)
    first.export()
    orders.add(3)
    first.export()
    first.stop()
    restarted = Sender(live_server.url, raw_key)
    restarted.meter.create_counter("orders.placed").add(2)
    restarted.export()
    restarted.stop()

    assert query(live_server.url, raw_key, "orders.placed", "sum") == 10
    assert not CumulativeStream.objects.exists()  # deltas need no state


def test_updown_counter_and_observable_gauge_arrive_as_value_points(live_server, raw_key):
    sender = Sender(live_server.url, raw_key)
    in_flight = sender.meter.create_up_down_counter("jobs.in_flight")
    sender.meter.create_observable_gauge(
        "room.temperature", callbacks=[lambda options: [Observation(21.5, {"room": "a"})]]
    )
    in_flight.add(5)
    in_flight.add(-2)
    sender.export()
    sender.stop()

    assert dict(Metric.objects.values_list("name", "type")) == {
        "jobs.in_flight": "value",
        "room.temperature": "value",
    }
    assert query(live_server.url, raw_key, "jobs.in_flight", "avg") == 3
    assert query(live_server.url, raw_key, "room.temperature", "max", "room:a") == 21.5


def test_histogram_gives_exact_count_and_sum_over_exports(live_server, raw_key):
    sender = Sender(live_server.url, raw_key)
    latency = sender.meter.create_histogram("http.duration", unit="ms")
    for value in (1, 2, 10):
        latency.record(value, {"route": "/pay"})
    sender.export()
    latency.record(5, {"route": "/pay"})
    sender.export()
    sender.stop()

    assert query(live_server.url, raw_key, "http.duration.count", "sum") == 4
    assert query(live_server.url, raw_key, "http.duration.sum", "sum") == 18
    assert query(live_server.url, raw_key, "http.duration.min", "min") == 1
    assert query(live_server.url, raw_key, "http.duration.max", "max") == 10


@pytest.mark.parametrize("compression", [Compression.Gzip, Compression.Deflate])
def test_compressed_exports_are_accepted(live_server, raw_key, compression):
    sender = Sender(live_server.url, raw_key, compression=compression)
    sender.meter.create_counter("zipped").add(7)
    sender.export()
    sender.stop()

    assert query(live_server.url, raw_key, "zipped", "sum") == 7


# --- JSON -------------------------------------------------------------------------------------


def _spec_example(time_ns: int) -> dict:
    """The specification's examples/metrics.json, dated now (its 2018 dates are out of window)."""
    at = time_ns  # a JSON number, as in the example; strings are tested below

    def attr(key: str) -> list[dict]:
        return [{"key": key, "value": {"stringValue": "some value"}}]

    return {
        "resourceMetrics": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": "my.service"}}]
                },
                "scopeMetrics": [
                    {
                        "scope": {
                            "name": "my.library",
                            "version": "1.0.0",
                            "attributes": [
                                {
                                    "key": "my.scope.attribute",
                                    "value": {"stringValue": "some scope attribute"},
                                }
                            ],
                        },
                        "metrics": [
                            {
                                "name": "my.counter",
                                "unit": "1",
                                "description": "I am a Counter",
                                "sum": {
                                    "aggregationTemporality": 1,
                                    "isMonotonic": True,
                                    "dataPoints": [
                                        {
                                            "asDouble": 5,
                                            "startTimeUnixNano": at,
                                            "timeUnixNano": at,
                                            "attributes": attr("my.counter.attr"),
                                        }
                                    ],
                                },
                            },
                            {
                                "name": "my.gauge",
                                "unit": "1",
                                "description": "I am a Gauge",
                                "gauge": {
                                    "dataPoints": [
                                        {
                                            "asDouble": 10,
                                            "timeUnixNano": at,
                                            "attributes": attr("my.gauge.attr"),
                                        }
                                    ]
                                },
                            },
                            {
                                "name": "my.histogram",
                                "unit": "1",
                                "description": "I am a Histogram",
                                "histogram": {
                                    "aggregationTemporality": 1,
                                    "dataPoints": [
                                        {
                                            "startTimeUnixNano": at,
                                            "timeUnixNano": at,
                                            "count": 3,
                                            "sum": 3,
                                            "bucketCounts": [1, 1, 1],
                                            "explicitBounds": [1],
                                            "min": 1,
                                            "max": 1,
                                            "attributes": attr("my.histogram.attr"),
                                        }
                                    ],
                                },
                            },
                        ],
                    }
                ],
            }
        ]
    }


def _post(
    url: str, body: bytes, key: str | None, content_type: str, **headers
) -> requests.Response:
    if key:
        headers["X-API-Key"] = key
    return requests.post(
        f"{url}/v1/metrics",
        data=body,
        headers={"Content-Type": content_type, **headers},
        timeout=10,
    )


def test_hand_built_json_export_from_the_specification_is_accepted(live_server, raw_key):
    body = json.dumps(_spec_example(time.time_ns())).encode()

    response = _post(live_server.url, body, raw_key, "application/json")

    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "application/json"
    assert response.json() == {}
    assert query(live_server.url, raw_key, "my.counter", "sum", "my.counter.attr:some value") == 5
    assert query(live_server.url, raw_key, "my.gauge", "max", "service:my.service") == 10
    assert query(live_server.url, raw_key, "my.histogram.count", "sum") == 3
    assert query(live_server.url, raw_key, "my.histogram.sum", "sum") == 3
    assert query(live_server.url, raw_key, "my.histogram.min", "min") == 1


def test_refused_data_points_are_a_partial_success_and_the_rest_is_stored(live_server, raw_key):
    now = time.time_ns()
    export = _spec_example(now)
    points = export["resourceMetrics"][0]["scopeMetrics"][0]["metrics"][0]["sum"]["dataPoints"]
    # Nine attributes + service = 10 tags: stored. Ten + service = 11: refused.
    points.append(
        {
            "asInt": "2",
            "timeUnixNano": str(now),
            "attributes": [{"key": f"k{i}", "value": {"intValue": i}} for i in range(9)],
        }
    )
    points.append(
        {
            "asInt": "4",
            "timeUnixNano": str(now),
            "attributes": [{"key": f"k{i}", "value": {"intValue": i}} for i in range(10)],
        }
    )
    points.append({"asInt": "8", "timeUnixNano": str(now - 8 * 86400 * 10**9)})  # too old
    Metric.objects.create(name="my.gauge", type="counter")  # exists with the other type

    response = _post(live_server.url, json.dumps(export).encode(), raw_key, "application/json")

    assert response.status_code == 200, response.text
    partial = response.json()["partialSuccess"]
    assert partial["rejectedDataPoints"] == "3"
    assert "at most 10 tags" in partial["errorMessage"]
    assert "older than the accepted window" in partial["errorMessage"]
    assert "'my.gauge' is a counter, not a value" in partial["errorMessage"]
    assert query(live_server.url, raw_key, "my.counter", "sum") == 5 + 2
    assert query(live_server.url, raw_key, "my.counter", "sum", "k8:8") == 2
    assert query(live_server.url, raw_key, "my.histogram.count", "sum") == 3


def test_partial_success_in_protobuf_counts_refused_points(live_server, raw_key):
    from google.protobuf import json_format
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
        ExportMetricsServiceRequest,
    )

    export = _spec_example(time.time_ns() + 8 * 86400 * 10**9)  # every point in the future
    message = json_format.ParseDict(export, ExportMetricsServiceRequest())

    response = _post(
        live_server.url, message.SerializeToString(), raw_key, "application/x-protobuf"
    )

    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/x-protobuf"
    answer = ExportMetricsServiceResponse.FromString(response.content)
    assert answer.partial_success.rejected_data_points == 3
    assert "too far in the future" in answer.partial_success.error_message
    assert not MetricPoint.objects.exists()


def test_names_outside_the_charset_become_underscores(live_server, raw_key):
    export = _spec_example(time.time_ns())
    metrics = export["resourceMetrics"][0]["scopeMetrics"][0]["metrics"]
    metrics[1]["name"] = "queue depth (jobs)"
    metrics[1]["gauge"]["dataPoints"][0]["attributes"] = [
        {"key": "9 lives", "value": {"boolValue": True}}
    ]

    response = _post(live_server.url, json.dumps(export).encode(), raw_key, "application/json")

    assert response.status_code == 200, response.text
    assert query(live_server.url, raw_key, "queue_depth__jobs_", "max", "_9_lives:true") == 10


# --- errors, as google.rpc.Status in the request's encoding ------------------------------------


def test_malformed_protobuf_is_400_with_a_protobuf_status(live_server, raw_key):
    response = _post(
        live_server.url, b"\xff\xff\xff not protobuf", raw_key, "application/x-protobuf"
    )

    assert response.status_code == 400
    assert response.headers["Content-Type"] == "application/x-protobuf"
    status = status_pb2.Status.FromString(response.content)
    assert status.code == 3  # INVALID_ARGUMENT
    assert "ExportMetricsServiceRequest" in status.message


def test_malformed_json_is_400_with_a_json_status(live_server, raw_key):
    response = _post(live_server.url, b'{"resourceMetrics": 3', raw_key, "application/json")

    assert response.status_code == 400
    assert response.headers["Content-Type"] == "application/json"
    assert response.json()["code"] == 3


def test_missing_key_is_401_and_read_only_key_403_as_status(live_server):
    body = json.dumps(_spec_example(time.time_ns())).encode()
    read_only = apikey_create(name="ro", scopes=["read"], rate_limit=1000)[1]

    missing = _post(live_server.url, body, None, "application/json")
    forbidden = _post(live_server.url, body, read_only, "application/json")

    assert missing.status_code == 401
    assert missing.json()["code"] == 16
    assert "API key is missing" in missing.json()["message"]
    assert forbidden.status_code == 403
    assert forbidden.json()["code"] == 7
    assert not MetricPoint.objects.exists()


@pytest.mark.usefixtures("rate_windows_held")
def test_rate_limited_export_is_429_with_retry_after(live_server):
    key = apikey_create(name="slow", scopes=["write"], rate_limit=1)[1]
    body = json.dumps({"resourceMetrics": []}).encode()

    first = _post(live_server.url, body, key, "application/json")
    second = _post(live_server.url, body, key, "application/x-protobuf")

    assert first.status_code == 200
    assert second.status_code == 429
    assert int(second.headers["Retry-After"]) > 0
    assert status_pb2.Status.FromString(second.content).code == 8


def test_other_content_types_and_encodings_are_415(live_server, raw_key):
    assert _post(live_server.url, b"x", raw_key, "text/plain").status_code == 415
    brotli = _post(live_server.url, b"x", raw_key, "application/json", **{"Content-Encoding": "br"})
    assert brotli.status_code == 415
    assert "gzip" in brotli.json()["message"]


def test_body_cap_at_its_edge_and_a_gzip_bomb_is_413(live_server, raw_key, settings):
    body = json.dumps(_spec_example(time.time_ns())).encode()
    zipped = gzip.compress(body)
    settings.OTLP_MAX_BODY_BYTES = len(body)

    at_cap = _post(
        live_server.url, zipped, raw_key, "application/json", **{"Content-Encoding": "gzip"}
    )
    settings.OTLP_MAX_BODY_BYTES = len(body) - 1
    past_cap = _post(
        live_server.url, zipped, raw_key, "application/json", **{"Content-Encoding": "gzip"}
    )
    plain_past_cap = _post(live_server.url, body, raw_key, "application/json")
    settings.OTLP_MAX_BODY_BYTES = 1024 * 1024
    bomb = gzip.compress(b" " * (64 * 1024 * 1024))  # 64 MiB of spaces in ~64 KiB
    exploded = _post(
        live_server.url, bomb, raw_key, "application/json", **{"Content-Encoding": "gzip"}
    )

    assert at_cap.status_code == 200, at_cap.text
    assert past_cap.status_code == 413
    assert past_cap.json()["code"] == 8
    assert plain_past_cap.status_code == 413
    assert exploded.status_code == 413
    assert query(live_server.url, raw_key, "my.counter", "sum") == 5


def test_truncated_gzip_is_400(live_server, raw_key):
    zipped = gzip.compress(json.dumps(_spec_example(time.time_ns())).encode())

    response = _post(
        live_server.url, zipped[:-12], raw_key, "application/json", **{"Content-Encoding": "gzip"}
    )

    assert response.status_code == 400
    assert "truncated" in response.json()["message"]


def _export(*metrics: dict, service: str = "billing") -> bytes:
    return json.dumps(
        {
            "resourceMetrics": [
                {
                    "resource": {
                        "attributes": [{"key": "service.name", "value": {"stringValue": service}}]
                    },
                    "scopeMetrics": [{"scope": {"name": "lib"}, "metrics": list(metrics)}],
                }
            ]
        }
    ).encode()


def test_every_metric_type_maps_as_documented(live_server, raw_key):
    now = time.time_ns()
    start = now - 60 * 10**9
    body = _export(
        {
            "name": "balance",
            "sum": {
                "aggregationTemporality": "AGGREGATION_TEMPORALITY_CUMULATIVE",
                "isMonotonic": False,
                "dataPoints": [{"asDouble": -4.5, "startTimeUnixNano": start, "timeUnixNano": now}],
            },
        },
        {
            "name": "rpc.latency",
            "summary": {
                "dataPoints": [
                    {
                        "startTimeUnixNano": start,
                        "timeUnixNano": now,
                        "count": "4",
                        "sum": 10.0,
                        "quantileValues": [
                            {"quantile": 0.5, "value": 2},
                            {"quantile": 0.99, "value": 4},
                        ],
                    }
                ]
            },
        },
        {
            "name": "payload.size",
            "exponentialHistogram": {
                "aggregationTemporality": 1,
                "dataPoints": [
                    {
                        "startTimeUnixNano": start,
                        "timeUnixNano": now,
                        "count": 3,
                        "sum": 30,
                        "scale": 0,
                        "zeroCount": 0,
                        "positive": {"offset": 3, "bucketCounts": [3]},
                        "max": 12,
                        "exemplars": [
                            {
                                "asDouble": 12,
                                "timeUnixNano": now,
                                "traceId": "5B8EFFF798038103D269B633813FC60C",
                                "spanId": "EEE19B7EC3C1B174",
                            }
                        ],
                    }
                ],
            },
        },
        {
            "name": "skipped",
            "gauge": {"dataPoints": [{"asDouble": 1, "timeUnixNano": now, "flags": 1}]},
        },
    )

    response = _post(live_server.url, body, raw_key, "application/json")

    assert response.status_code == 200, response.text
    assert response.json() == {}
    types = dict(Metric.objects.values_list("name", "type"))
    assert types == {
        "balance": "value",
        "rpc.latency.count": "counter",
        "rpc.latency.sum": "counter",
        "rpc.latency.p50": "value",
        "rpc.latency.p99": "value",
        "payload.size.count": "counter",
        "payload.size.sum": "counter",
        "payload.size.max": "value",
    }
    assert query(live_server.url, raw_key, "balance", "min", "service:billing") == -4.5
    assert query(live_server.url, raw_key, "rpc.latency.count", "sum") == 4  # start < time
    assert query(live_server.url, raw_key, "rpc.latency.p99", "max") == 4
    assert query(live_server.url, raw_key, "payload.size.sum", "sum") == 30


def test_first_cumulative_point_with_start_equal_to_time_only_sets_the_baseline(
    live_server, raw_key
):
    start = time.time_ns() - 10 * 10**9

    def counter(value: int, at: int) -> bytes:
        point = {"asInt": value, "startTimeUnixNano": start, "timeUnixNano": at}
        return _export(
            {
                "name": "logins",
                "sum": {"aggregationTemporality": 2, "isMonotonic": True, "dataPoints": [point]},
            }
        )

    for value, at in ((7, start), (10, start + 10**9), (10, start + 10**9), (4, start + 2 * 10**9)):
        assert _post(live_server.url, counter(value, at), raw_key, "application/json").ok

    # 7 is the baseline, +3, the retry adds nothing, then 4 < 10 is a reset: +4.
    assert sorted(MetricPoint.objects.values_list("value", flat=True)) == [3, 4]


def test_a_cumulative_histogram_sum_that_falls_within_a_run_is_a_negative_increment(
    live_server, raw_key
):
    start = time.time_ns() - 10 * 10**9

    def histogram(count: int, total: float, at: int, run_start: int = start) -> bytes:
        point = {"startTimeUnixNano": run_start, "timeUnixNano": at, "count": count, "sum": total}
        return _export(
            {"name": "delta.t", "histogram": {"aggregationTemporality": 2, "dataPoints": [point]}}
        )

    bodies = (
        histogram(2, 10.0, start + 10**9),  # first point, start < time: counts whole
        histogram(3, 4.0, start + 2 * 10**9),  # a -6 was recorded: same run
        histogram(1, 5.0, start + 4 * 10**9, run_start=start + 3 * 10**9),  # restarted
    )
    for body in bodies:
        assert _post(live_server.url, body, raw_key, "application/json").ok

    assert query(live_server.url, raw_key, "delta.t.count", "sum") == 2 + 1 + 1
    assert query(live_server.url, raw_key, "delta.t.sum", "sum") == 10 - 6 + 5
