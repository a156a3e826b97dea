"""Validated points packed into bytes for the outbox (`IngestBatch.packed`), and back.

The layout, little-endian: version (u8), header length (u32), point count (u32), the header
(JSON: [[type, name, tags], …] for each distinct series), then one array per column: series
index (u32), value (f64), timestamp (i64 microseconds since the Unix epoch, UTC).
"""

from __future__ import annotations

import json
import struct
import sys
from array import array
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from .services import PointInput

_PACK_VERSION = 1
_PACK_HEAD = struct.Struct("<BII")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def points_pack(points: Sequence[PointInput]) -> bytes:
    """Validated points as bytes: each distinct series named once, then columns of numbers.

    Floats and microsecond timestamps round-trip exactly; packing 1000 points is a fraction of a
    millisecond, and PostgreSQL stores the bytes without parsing them (unlike jsonb).
    """
    keys: dict[tuple, int] = {}
    series: list[list] = []
    index = array("I")
    values = array("d")
    stamps = array("q")
    for p in points:
        key = (p.type, p.name, *p.tags.items())
        position = keys.get(key)
        if position is None:
            position = keys[key] = len(series)
            series.append([p.type, p.name, dict(p.tags)])
        index.append(position)
        values.append(p.value)
        stamps.append((p.timestamp - _EPOCH) // _MICROSECOND)
    header = json.dumps(series, separators=(",", ":"), ensure_ascii=False).encode()
    columns = [index, values, stamps]
    if sys.byteorder != "little":
        for column in columns:
            column.byteswap()
    return b"".join(
        [_PACK_HEAD.pack(_PACK_VERSION, len(header), len(points)), header]
        + [column.tobytes() for column in columns]
    )


def points_unpack(packed: bytes) -> list[PointInput]:
    """The points of `points_pack`, in their order."""
    version, header_length, count = _PACK_HEAD.unpack_from(packed)
    if version != _PACK_VERSION:
        raise ValueError(f"unknown packed batch version {version}")
    offset = _PACK_HEAD.size
    series = json.loads(packed[offset : offset + header_length])
    offset += header_length
    columns = []
    for code in "Idq":
        column = array(code)
        end = offset + column.itemsize * count
        column.frombytes(packed[offset:end])
        offset = end
        columns.append(column)
    if sys.byteorder != "little":
        for column in columns:
            column.byteswap()
    index, values, stamps = columns
    # Points of a batch share few distinct timestamps (an agent stamps a flush once): each
    # becomes a datetime once, which halves the cost of unpacking.
    times: dict[int, datetime] = {}
    points = []
    for i, v, us in zip(index, values, stamps, strict=True):
        when = times.get(us)
        if when is None:
            when = times[us] = _EPOCH + _MICROSECOND * us
        kind, name, tags = series[i]
        points.append(PointInput(kind, name, v, when, tags))
    return points


def points_decode(payload: Iterable[dict[str, Any]]) -> list[PointInput]:
    """The points of a batch queued as JSON, before batches were packed."""
    return [
        PointInput(
            type=item["type"],
            name=item["name"],
            value=float(item["value"]),
            timestamp=datetime.fromisoformat(item["timestamp"]),
            tags=item["tags"],
        )
        for item in payload
    ]
