"""Prometheus remote write 1.0 (`prometheus.WriteRequest`, snappy block format) into points.

The messages are built here with `protobuf` itself, from the remote-write 1.0 specification
(`WriteRequest`, `TimeSeries`, `Label`, `Sample`; field numbers as in Prometheus' `remote.proto`
and `types.proto`), as a descriptor made in code and turned into classes by `message_factory`:
no generated file is copied in. Fields this service does not read (metadata, exemplars, native
histograms) are left out; protobuf skips them when parsing.

Mapping, per series: `__name__` is the metric, the other labels are the tags (at most 10; empty
labels are absent, as in Prometheus). Samples (timestamps in milliseconds) are value points,
except for a series named `…_total`, `…_count`, `…_sum` or `…_bucket`, a cumulative counter
whose increase since its last sample is stored (`metrics.cumulative`: a drop is a reset; the
first sample of a series only sets the baseline). NaN samples are skipped: the stale marker
and the NaN of a summary without observations both mean "no value".
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import cramjam
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError

from ..cumulative import CumulativeObservation, stream_key
from ..models import MetricType
from ..serializers import Window
from ..services import PointInput
from .intake import Intake, Refused, clean_name, clean_tags, clean_value

COUNTER_SUFFIXES = ("_total", "_count", "_sum", "_bucket")
# The first chunk of the snappy *framed* format, which remote write does not use.
FRAMED_MAGIC = b"\xff\x06\x00\x00sNaPpY"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_F = descriptor_pb2.FieldDescriptorProto


def _message(name: str, *fields: tuple[str, int, int, int, str]) -> descriptor_pb2.DescriptorProto:
    message = descriptor_pb2.DescriptorProto(name=name)
    for field_name, number, kind, label, type_name in fields:
        field = message.field.add(name=field_name, number=number, type=kind, label=label)
        if type_name:
            field.type_name = type_name
    return message


def _build() -> tuple[type, type, type, type]:
    file = descriptor_pb2.FileDescriptorProto(
        name="glowing_fiesta/prometheus_remote_write_1_0.proto", package="prometheus"
    )
    file.syntax = "proto3"
    optional, repeated = _F.LABEL_OPTIONAL, _F.LABEL_REPEATED
    file.message_type.extend(
        [
            _message(
                "Label",
                ("name", 1, _F.TYPE_STRING, optional, ""),
                ("value", 2, _F.TYPE_STRING, optional, ""),
            ),
            _message(
                "Sample",
                ("value", 1, _F.TYPE_DOUBLE, optional, ""),
                ("timestamp", 2, _F.TYPE_INT64, optional, ""),
            ),
            _message(
                "TimeSeries",
                ("labels", 1, _F.TYPE_MESSAGE, repeated, ".prometheus.Label"),
                ("samples", 2, _F.TYPE_MESSAGE, repeated, ".prometheus.Sample"),
            ),
            _message(
                "WriteRequest",
                ("timeseries", 1, _F.TYPE_MESSAGE, repeated, ".prometheus.TimeSeries"),
            ),
        ]
    )
    # A pool of its own: the names cannot clash with any other "prometheus" package loaded.
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return tuple(  # type: ignore[return-value]
        message_factory.GetMessageClass(pool.FindMessageTypeByName(f"prometheus.{name}"))
        for name in ("WriteRequest", "TimeSeries", "Label", "Sample")
    )


WriteRequest, TimeSeries, Label, Sample = _build()


class Malformed(ValueError):
    """Not a snappy-compressed WriteRequest (400)."""


class TooLarge(ValueError):
    """Decompressed, the body would pass the cap (413)."""


def request_parse(body: bytes, *, limit: int) -> WriteRequest:
    """Decompress (snappy block format) and decode a WriteRequest of at most `limit` bytes."""
    if body.startswith(FRAMED_MAGIC):
        raise Malformed(
            "the body is in the snappy framed format; remote write uses the block format"
        )
    size = _declared_size(body)
    if size > limit:
        raise TooLarge(
            f"the decompressed body of {size} bytes is larger than the {limit}-byte limit"
        )
    try:
        raw = bytes(cramjam.snappy.decompress_raw(body))
    except cramjam.DecompressionError as exc:
        raise Malformed(f"the body is not snappy (block format): {exc}") from None
    request = WriteRequest()
    try:
        request.ParseFromString(raw)
    except DecodeError as exc:
        raise Malformed(f"the body is not a remote-write WriteRequest: {exc}") from None
    return request


def _declared_size(body: bytes) -> int:
    """The uncompressed length a snappy block starts with (a varint), read before inflating."""
    size = shift = 0
    for index, byte in enumerate(body[:10]):
        size |= (byte & 0x7F) << shift
        if not byte & 0x80:
            if index >= 5:
                break  # longer than snappy's 32-bit length
            return size
        shift += 7
    raise Malformed("the body is not snappy (block format): no valid length header")


def request_intake(request: WriteRequest, *, now: datetime) -> Intake:
    """The points of a WriteRequest; each series is one item of the intake."""
    window = Window.around(now)
    oldest_ms = (window.oldest - _EPOCH) // timedelta(milliseconds=1)
    newest_ms = (window.newest - _EPOCH) // timedelta(milliseconds=1)
    intake = Intake()
    for item, series in enumerate(request.timeseries):
        labels = {label.name: label.value for label in series.labels}
        metric = labels.pop("__name__", "")
        try:
            name = clean_name(metric)
            tags = clean_tags(labels)
        except Refused as exc:
            intake.refuse(item, f"{metric[:80] or 'series'}: {exc}")
            continue
        cumulative = metric.endswith(COUNTER_SUFFIXES)
        key = stream_key(["prw", metric, sorted(labels.items())]) if cumulative else None
        for sample in series.samples:
            if math.isnan(sample.value):
                continue
            try:
                value = clean_value(sample.value)
                if not oldest_ms <= sample.timestamp <= newest_ms:
                    raise Refused(
                        f"timestamp {sample.timestamp} ms lies outside the accepted window"
                    )
            except Refused as exc:
                # Only this sample: the series' others are stored.
                intake.refuse(item, f"{metric[:80]}: {exc}")
                continue
            timestamp = _EPOCH + timedelta(milliseconds=sample.timestamp)
            if key is None:
                intake.points.append(
                    (item, PointInput(MetricType.VALUE, name, value, timestamp, tags))
                )
            else:
                observation = CumulativeObservation(
                    stream=key,
                    name=name,
                    tags=tags,
                    timestamp=timestamp,
                    time_ns=sample.timestamp * 1_000_000,
                    start_ns=0,
                    value=value,
                )
                intake.observations.append((item, observation))
    return intake
