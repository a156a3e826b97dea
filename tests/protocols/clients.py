"""The clients the protocol tests send with: Prometheus remote write requests (built from the
protobuf schema, snappy-compressed) and the OpenTelemetry SDK's own OTLP/HTTP exporter."""

from __future__ import annotations

import http.client
import math

import cramjam
import requests
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricExportResult, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource

from protocols.prometheus_pb import WriteRequest

# --- remote write ----------------------------------------------------------------------------


def write_request(series: list[tuple[dict[str, str], list[tuple[float, int]]]]) -> bytes:
    """A snappy-compressed WriteRequest: (labels, [(value, timestamp ms)]) per series."""
    request = WriteRequest()
    for labels, samples in series:
        ts = request.timeseries.add()
        for name, value in sorted(labels.items()):
            ts.labels.add(name=name, value=value)
        for value, timestamp in samples:
            ts.samples.add(value=value, timestamp=timestamp)
    return bytes(cramjam.snappy.compress_raw(request.SerializeToString()))


def post(url: str, key: str | None, body: bytes, **headers: str) -> requests.Response:
    """POST /api/v1/write of `body` as Prometheus sends it, with `key` as a bearer token."""
    headers = {
        "Content-Type": "application/x-protobuf",
        "Content-Encoding": "snappy",
        "X-Prometheus-Remote-Write-Version": "0.1.0",
        **headers,
    }
    if key:
        headers["Authorization"] = f"Bearer {key}"
    return requests.post(f"{url}/api/v1/write", data=body, headers=headers, timeout=60)


def post_chunked(url: str, key: str, chunks) -> http.client.HTTPResponse:
    """POST /api/v1/write of a body sent as `chunks` (Transfer-Encoding: chunked, no
    Content-Length); the response, its body unread."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.request(
        "POST",
        "/api/v1/write",
        body=chunks,
        headers={
            "Content-Type": "application/x-protobuf",
            "Content-Encoding": "snappy",
            "X-API-Key": key,
        },
        encode_chunked=True,
    )
    return conn.getresponse()


# --- OTLP ------------------------------------------------------------------------------------


class RecordingExporter(OTLPMetricExporter):
    """The real exporter, remembering each export's result (the reader swallows them)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.results: list[MetricExportResult] = []

    def export(self, metrics_data, timeout_millis: float = 10_000, **kwargs):
        result = super().export(metrics_data, timeout_millis=timeout_millis, **kwargs)
        self.results.append(result)
        return result


class Sender:
    """One run of an instrumented service: a MeterProvider exporting only when flushed."""

    def __init__(self, url: str, key: str, *, service: str = "checkout", **exporter) -> None:
        self.exporter = RecordingExporter(
            endpoint=f"{url}/v1/metrics", headers={"Authorization": f"Bearer {key}"}, **exporter
        )
        reader = PeriodicExportingMetricReader(self.exporter, export_interval_millis=math.inf)
        self.provider = MeterProvider(
            metric_readers=[reader], resource=Resource.create({"service.name": service})
        )
        self.meter = self.provider.get_meter("shop", "1.0")

    def export(self) -> None:
        self.provider.force_flush()
        assert self.exporter.results[-1] == MetricExportResult.SUCCESS

    def stop(self) -> None:
        self.provider.shutdown()
