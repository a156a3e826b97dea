"""Prometheus remote write 1.0 (`prometheus.WriteRequest`, snappy block format) into points.

The messages (`protocols.prometheus_pb`) are built with `protobuf` itself from the
remote-write 1.0 specification, as a descriptor made in code: no generated file is copied in.

Mapping, per series: `__name__` is the metric, the other labels are the tags (at most 10; empty
labels are absent, as in Prometheus). Samples (timestamps in milliseconds) are value points,
except for a series named `…_total`, `…_count`, `…_sum` or `…_bucket`, a cumulative counter
whose increase since its last sample is stored (`protocols.cumulative`: a drop is a reset; the
first sample of a series only sets the baseline). NaN samples are skipped: the stale marker
and the NaN of a summary without observations both mean "no value".
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import cramjam
from google.protobuf.message import DecodeError

from metrics.models import MetricType
from metrics.points import Window
from metrics.services import PointInput

from .cumulative import CumulativeObservation, stream_key
from .intake import Intake, Refused, clean_name, clean_tags, clean_value
from .prometheus_pb import WriteRequest

COUNTER_SUFFIXES = ("_total", "_count", "_sum", "_bucket")
# The first chunk of the snappy *framed* format, which remote write does not use.
FRAMED_MAGIC = b"\xff\x06\x00\x00sNaPpY"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


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
