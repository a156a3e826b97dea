"""One rule for every way points arrive: the same tag value, name and value are accepted or
refused alike by the JSON API, InfluxDB line protocol, StatsD (a real `manage.py statsd`),
OTLP and Prometheus remote write.

Each case is written once through each of the five paths; a path accepted the point when a
point of it is stored (whatever the protocol answers about the others, e.g. a partial write).
"""

from __future__ import annotations

import json
import math
import time

import cramjam
import pytest
import requests
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)

from metrics.models import MetricPoint
from protocols.prometheus_pb import WriteRequest

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.statsd]

VALUE_MAX = 1e15
JUST_PAST = math.nextafter(VALUE_MAX, math.inf)
NAME = "rules.checked"


def _json(url: str, key: str, name: str, value: float, tags: dict[str, str]) -> None:
    requests.post(
        f"{url}/api/metrics/value",
        data=json.dumps({"name": name, "value": value, "tags": tags}),
        headers={"X-API-Key": key, "Content-Type": "application/json"},
        timeout=30,
    )


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")


def _line_protocol(url: str, key: str, name: str, value: float, tags: dict[str, str]) -> None:
    tag_set = "".join(f",{_escape(k)}={_escape(v)}" for k, v in tags.items())
    requests.post(
        f"{url}/api/v2/write?org=o&bucket=b&precision=s",
        data=f"{_escape(name)}{tag_set} value={value!r} {int(time.time())}\n".encode(),
        headers={"Authorization": f"Token {key}"},
        timeout=30,
    )


def _otlp(url: str, key: str, name: str, value: float, tags: dict[str, str]) -> None:
    export = ExportMetricsServiceRequest()
    metric = export.resource_metrics.add().scope_metrics.add().metrics.add()
    metric.name = name
    point = metric.gauge.data_points.add()
    point.time_unix_nano = time.time_ns()
    point.as_double = value
    for k, v in tags.items():
        point.attributes.add(key=k).value.string_value = v
    requests.post(
        f"{url}/v1/metrics",
        data=export.SerializeToString(),
        headers={"X-API-Key": key, "Content-Type": "application/x-protobuf"},
        timeout=30,
    )


def _remote_write(url: str, key: str, name: str, value: float, tags: dict[str, str]) -> None:
    write = WriteRequest()
    series = write.timeseries.add()
    for label, text in sorted({"__name__": name, **tags}.items()):
        series.labels.add(name=label, value=text)
    series.samples.add(value=value, timestamp=int(time.time() * 1000))
    requests.post(
        f"{url}/api/v1/write",
        data=bytes(cramjam.snappy.compress_raw(write.SerializeToString())),
        headers={
            "Authorization": f"Bearer {key}",
            "Content-Type": "application/x-protobuf",
            "Content-Encoding": "snappy",
            "X-Prometheus-Remote-Write-Version": "0.1.0",
        },
        timeout=30,
    )


HTTP_PATHS = {
    "json": _json,
    "line protocol": _line_protocol,
    "otlp": _otlp,
    "remote write": _remote_write,
}


@pytest.mark.parametrize(
    ("name", "value", "tags", "accepted"),
    [
        pytest.param(NAME, 1.0, {"k": "plain"}, True, id="valid"),
        pytest.param(NAME, 1.0, {"k": "a\xa0b"}, True, id="no-break-space"),
        pytest.param(NAME, 1.0, {"k": "a\x01b"}, False, id="c0-control"),
        pytest.param(NAME, 1.0, {"k": "a\x9fb"}, False, id="c1-control"),
        pytest.param(NAME, 1.0, {"k": "v" * 191}, True, id="tag-value-191"),
        pytest.param(NAME, 1.0, {"k": "v" * 192}, False, id="tag-value-192"),
        pytest.param("n" * 191, 1.0, {}, True, id="name-191"),
        pytest.param("n" * 192, 1.0, {}, False, id="name-192"),
        pytest.param(NAME, VALUE_MAX, {}, True, id="value-max"),
        pytest.param(NAME, -VALUE_MAX, {}, True, id="value-min"),
        pytest.param(NAME, JUST_PAST, {}, False, id="value-past-max"),
    ],
)
def test_every_path_accepts_or_refuses_alike(
    live_server, raw_key, start_statsd, name, value, tags, accepted
):
    outcomes = {}
    for path, write in HTTP_PATHS.items():
        before = MetricPoint.objects.count()
        write(live_server.url, raw_key, name, value, tags)
        outcomes[path] = MetricPoint.objects.count() > before

    server = start_statsd(flush_seconds=1)
    before = MetricPoint.objects.count()
    flushes = server.in_one_interval()
    tag_part = "|#" + ",".join(f"{k}:{v}" for k, v in tags.items()) if tags else ""
    server.send(f"{name}:{value!r}|g{tag_part}".encode())
    server.wait_for_flush(flushes, lines=1)
    outcomes["statsd"] = MetricPoint.objects.count() > before

    assert outcomes == dict.fromkeys(outcomes, accepted)
