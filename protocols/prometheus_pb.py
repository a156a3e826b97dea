"""The Prometheus remote write 1.0 messages, built with `protobuf` from the specification.

`WriteRequest`, `TimeSeries`, `Label` and `Sample`, with the field numbers of Prometheus'
`prompb/remote.proto` and `prompb/types.proto`, are declared as a descriptor in code and turned
into classes by `message_factory`: no generated file is copied in, and no protoc is needed.
Fields this service does not read (metadata, exemplars, native histograms) are left out;
protobuf skips unknown fields when parsing. Imports nothing of Django, so clients and
benchmarks can build requests with it too.
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

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

__all__ = ["Label", "Sample", "TimeSeries", "WriteRequest"]
