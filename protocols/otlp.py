"""OpenTelemetry OTLP/HTTP metrics (`ExportMetricsServiceRequest`) into points.

The protobuf classes are those of the `opentelemetry-proto` package; the JSON encoding is the
protobuf JSON mapping OTLP specifies (lowerCamelCase keys, 64-bit integers as strings or
numbers, enums as numbers or names), read with `google.protobuf.json_format`. Errors are
`google.rpc.Status` messages (from `googleapis-common-protos`) in the request's encoding.

Mapping, per data point:

- the metric name, its characters outside the service's charset made `_`; the data point's
  attributes are the tags, and the resource's `service.name` the tag `service`; more than 10
  tags, a timestamp outside the accepted window, a value that is not finite: the data point is
  refused (reported in `partial_success`), the others stored;
- Sum, monotonic: a counter; delta temporality adds the value, cumulative stores the increase
  since the stream's last point (`protocols.cumulative`), a stream being resource + scope + metric
  + attributes. Sum, not monotonic, and Gauge: value points;
- Histogram and ExponentialHistogram: counters `<name>.count` and `<name>.sum` (as a Sum), and
  value points `<name>.min` / `<name>.max` when present; Summary (always cumulative):
  `<name>.count`, `<name>.sum` and a value point per quantile, `<name>.p50`, `<name>.p99`…
- a data point flagged "no recorded value" is skipped.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from google.rpc import status_pb2
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.metrics.v1 import metrics_pb2

from metrics.models import MetricType
from metrics.points import Window
from metrics.services import PointInput

from .cumulative import CumulativeObservation, stream_key, stream_prefix
from .intake import Intake, Refused, Stored, clean_name, clean_tags, clean_value

PROTOBUF = "application/x-protobuf"
JSON = "application/json"

DELTA = metrics_pb2.AGGREGATION_TEMPORALITY_DELTA
CUMULATIVE = metrics_pb2.AGGREGATION_TEMPORALITY_CUMULATIVE
NO_RECORDED_VALUE = metrics_pb2.DATA_POINT_FLAGS_NO_RECORDED_VALUE_MASK
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# google.rpc.Code of each HTTP status the endpoint answers with.
RPC_CODES = {
    400: 3,  # INVALID_ARGUMENT
    401: 16,  # UNAUTHENTICATED
    403: 7,  # PERMISSION_DENIED
    404: 5,  # NOT_FOUND
    405: 12,  # UNIMPLEMENTED
    409: 10,  # ABORTED
    411: 3,
    413: 8,  # RESOURCE_EXHAUSTED
    415: 3,
    422: 9,  # FAILED_PRECONDITION
    429: 8,
    503: 14,  # UNAVAILABLE
}


class Malformed(ValueError):
    """The body is not an ExportMetricsServiceRequest in the announced encoding (400)."""


def request_parse(body: bytes, *, encoding: str) -> ExportMetricsServiceRequest:
    """Decode an export request, protobuf or JSON; Malformed when it does not decode."""
    message = ExportMetricsServiceRequest()
    try:
        if encoding == JSON:
            json_format.Parse(body, message, ignore_unknown_fields=True)
        else:
            message.ParseFromString(body)
    except (DecodeError, json_format.ParseError, ValueError, RecursionError) as exc:
        kind = "JSON" if encoding == JSON else "protobuf"
        raise Malformed(
            f"the body is not an OTLP ExportMetricsServiceRequest in {kind}: {str(exc)[:200]}"
        ) from None
    return message


def _any_value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return ""
    if kind == "array_value":
        return [_any_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _any_value(kv.value) for kv in value.kvlist_value.values}
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode()
    return getattr(value, kind)


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def attributes(items: Iterable[Any]) -> dict[str, str]:
    """OTLP KeyValues as strings: numbers and booleans spelt out, arrays and maps as JSON."""
    return {kv.key: _text(_any_value(kv.value)) for kv in items}


class _Context:
    """What the data points of one metric share: names, resource, scope, the window."""

    def __init__(
        self,
        *,
        resource: Mapping[str, str],
        scope: list[Any],
        metric: str,
        oldest_ns: int,
        newest_ns: int,
    ) -> None:
        self.service = resource.get("service.name")
        self.stream_prefix = stream_prefix(["otlp", sorted(resource.items()), scope, metric])
        self.metric = metric
        self.oldest_ns = oldest_ns
        self.newest_ns = newest_ns

    def name(self, suffix: str = "") -> str:
        return clean_name(self.metric, suffix)

    def tags(self, raw: dict[str, str]) -> dict[str, str]:
        if self.service:
            raw = {**raw, "service": self.service}
        return clean_tags(raw)

    def timestamp(self, time_ns: int) -> datetime:
        if time_ns < self.oldest_ns:
            raise Refused(f"timestamp {time_ns} ns is older than the accepted window")
        if time_ns > self.newest_ns:
            raise Refused(f"timestamp {time_ns} ns is too far in the future")
        return _EPOCH + timedelta(microseconds=time_ns // 1000)


def request_intake(request: ExportMetricsServiceRequest, *, now: datetime) -> Intake:
    """The points of an export request; each data point is one item of the intake."""
    window = Window.around(now)
    oldest_ns = int((window.oldest - _EPOCH) / timedelta(microseconds=1)) * 1000
    newest_ns = int((window.newest - _EPOCH) / timedelta(microseconds=1)) * 1000
    intake = Intake()
    item = 0
    for resource_metrics in request.resource_metrics:
        resource = attributes(resource_metrics.resource.attributes)
        for scope_metrics in resource_metrics.scope_metrics:
            scope = scope_metrics.scope
            scope_id = [scope.name, scope.version, sorted(attributes(scope.attributes).items())]
            for metric in scope_metrics.metrics:
                kind = metric.WhichOneof("data")
                if kind is None:
                    continue
                data = getattr(metric, kind)
                context = _Context(
                    resource=resource,
                    scope=scope_id,
                    metric=metric.name,
                    oldest_ns=oldest_ns,
                    newest_ns=newest_ns,
                )
                for point in data.data_points:
                    try:
                        if not point.flags & NO_RECORDED_VALUE:
                            _data_point(intake, item, context, kind, data, point)
                    except Refused as exc:
                        intake.refuse(item, f"{metric.name[:80]}: {exc}")
                    item += 1
    return intake


def _data_point(
    intake: Intake, item: int, context: _Context, kind: str, data: Any, point: Any
) -> None:
    """Add one data point's points to the intake, all of them or (raising Refused) none."""
    raw_attributes = attributes(point.attributes)
    tags = context.tags(raw_attributes)
    timestamp = context.timestamp(point.time_unix_nano)
    stream = sorted(raw_attributes.items())
    points: list[PointInput] = []
    observations: list[CumulativeObservation] = []

    def value_point(suffix: str, value: float) -> None:
        points.append(
            PointInput(MetricType.VALUE, context.name(suffix), clean_value(value), timestamp, tags)
        )

    def counter(suffix: str, value: float, temporality: int) -> None:
        name = context.name(suffix)
        value = clean_value(value)
        if temporality == DELTA:
            points.append(PointInput(MetricType.COUNTER, name, value, timestamp, tags))
        elif temporality == CUMULATIVE:
            if point.start_time_unix_nano > point.time_unix_nano:
                raise Refused("start_time_unix_nano is after time_unix_nano")
            observations.append(
                CumulativeObservation(
                    stream=stream_key([stream, suffix], prefix=context.stream_prefix),
                    name=name,
                    tags=tags,
                    timestamp=timestamp,
                    time_ns=point.time_unix_nano,
                    start_ns=point.start_time_unix_nano,
                    value=value,
                    # A sum of observations falls when some are negative; with a known start,
                    # a restart shows as a new start time instead.
                    falls_reset=suffix != ".sum" or not point.start_time_unix_nano,
                )
            )
        else:
            raise Refused("aggregation temporality is unspecified")

    if kind in {"gauge", "sum"}:
        which = point.WhichOneof("value")
        if which is None:
            raise Refused("the data point has no value")
        value = getattr(point, which)
        if kind == "sum" and data.is_monotonic:
            counter("", value, data.aggregation_temporality)
        else:
            value_point("", value)
    elif kind in {"histogram", "exponential_histogram"}:
        counter(".count", point.count, data.aggregation_temporality)
        if point.HasField("sum"):
            counter(".sum", point.sum, data.aggregation_temporality)
        if point.HasField("min"):
            value_point(".min", point.min)
        if point.HasField("max"):
            value_point(".max", point.max)
    elif kind == "summary":
        counter(".count", point.count, CUMULATIVE)
        counter(".sum", point.sum, CUMULATIVE)
        for quantile in point.quantile_values:
            value_point(f".p{quantile.quantile * 100:g}", quantile.value)
    else:
        raise Refused(f"metric type {kind} is not supported")
    intake.points += [(item, p) for p in points]
    intake.observations += [(item, o) for o in observations]


def response_body(stored: Stored, *, encoding: str) -> bytes:
    """ExportMetricsServiceResponse: empty, or a partial success counting refused data points."""
    response = ExportMetricsServiceResponse()
    if stored.refused:
        response.partial_success.rejected_data_points = stored.refused
        response.partial_success.error_message = stored.message[:4000]
    return _encode(response, encoding)


def status_body(status: int, message: str, *, encoding: str) -> bytes:
    """A google.rpc.Status for an HTTP error status."""
    return _encode(status_pb2.Status(code=RPC_CODES.get(status, 2), message=message), encoding)


def _encode(message: Any, encoding: str) -> bytes:
    if encoding == JSON:
        return json_format.MessageToJson(message, indent=None).encode()
    return message.SerializeToString()
