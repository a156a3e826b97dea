"""Cumulative counter streams: running totals in, exact increments out.

OpenTelemetry (cumulative temporality, the SDKs' default) and Prometheus send a counter as its
total since the sender's run began. The service stores increments, so each stream's last point
is kept in `cumulative_streams` and every new point is turned into the increase since it, with
the reset rules of the OpenTelemetry data model:

- a point of a new run (another `start_ns`, or a total smaller than the last) counts whole
  (a histogram's sum, which falls when negative values are recorded, resets only by `start_ns`);
- the first point of a stream counts whole when its run started before it (`start_ns < time`):
  everything since the start is new to us; with `start_ns == time`, or an unknown start (0, as
  in remote write), it only sets the baseline;
- a point no newer than the last one (a retry, or two processes given the same export) counts
  nothing and leaves the state as it is.

`streams_advance` runs inside the caller's transaction, beside `points_ingest`: the stream rows
stay locked until the points commit, so two processes given the same export count it once, and
a rolled-back write leaves the state as it was.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import connection

from metrics.models import MetricType
from metrics.points import value_ok
from metrics.services import PointInput


@dataclass(frozen=True)
class CumulativeObservation:
    """One point of a cumulative counter stream, validated but not yet turned into an increment."""

    stream: uuid.UUID
    name: str
    tags: dict[str, str]
    timestamp: datetime
    time_ns: int
    start_ns: int  # 0: the sender does not say when the run began
    value: float
    # False for a total that may fall within a run (a histogram's sum of negative values):
    # then only a new start_ns is a reset, and a fall is a negative increment.
    falls_reset: bool = True


@dataclass(frozen=True)
class Advance:
    """What a set of observations became: counter increments, and those refused (too large)."""

    increments: list[PointInput]
    refused: list[tuple[CumulativeObservation, str]]


def stream_key(identity: Iterable[object], *, prefix: Any = None) -> uuid.UUID:
    """The key of a stream: md5 of its identity's canonical JSON (a fixed-width primary key).

    `prefix`, from `stream_prefix`, stands for the identity's first parts, shared by many
    streams (resource, scope, metric), so that they are serialised once per request.
    """
    digest = prefix.copy() if prefix is not None else hashlib.md5(usedforsecurity=False)
    digest.update(_canonical(identity))
    return uuid.UUID(bytes=digest.digest())


def stream_prefix(identity: Iterable[object]) -> Any:
    """A hash state over the first parts of many streams' identity, for `stream_key`."""
    digest = hashlib.md5(usedforsecurity=False)
    digest.update(_canonical(identity))
    return digest


def _canonical(identity: Iterable[object]) -> bytes:
    return json.dumps(
        list(identity), separators=(",", ":"), ensure_ascii=False, default=str
    ).encode()


# The first statement creates the missing rows (last_ns NULL: no point yet) and locks every row
# of the request, in key order, so that concurrent requests sharing streams never deadlock. The
# no-op DO UPDATE is what takes the lock on existing rows and makes RETURNING give them back; a
# concurrent first insert of the same key waits for the other transaction and then sees its row.
_LOCK = """
INSERT INTO cumulative_streams AS s (key, name, start_ns, last_ns, last_value, updated_at)
SELECT k, n, 0, NULL, NULL, now()
FROM unnest(%s::uuid[], %s::text[]) AS u(k, n)
ORDER BY k
ON CONFLICT (key) DO UPDATE SET key = s.key
RETURNING key, start_ns, last_ns, last_value
"""

_SAVE = """
UPDATE cumulative_streams AS s
SET start_ns = u.st, last_ns = u.t, last_value = u.v, updated_at = now()
FROM unnest(%s::uuid[], %s::bigint[], %s::bigint[], %s::float8[]) AS u(k, st, t, v)
WHERE s.key = u.k
"""


def streams_advance(*, observations: Sequence[CumulativeObservation]) -> Advance:
    """Turn cumulative observations into counter increments and save each stream's new state.

    Must run inside the transaction that stores the increments (`transaction.atomic` around it
    and `points_ingest`): the stream rows are locked (one upsert per stream, in key order) until
    it commits. Observations of one stream are applied in time order. Increments of zero (a
    baseline, a retry) are not returned; one beyond ±1e15 is refused, the state still advancing.
    """
    if not observations:
        return Advance([], [])
    by_stream: dict[uuid.UUID, list[CumulativeObservation]] = {}
    for observation in observations:
        by_stream.setdefault(observation.stream, []).append(observation)
    keys = sorted(by_stream)
    with connection.cursor() as cursor:
        cursor.execute(_LOCK, [keys, [by_stream[k][0].name for k in keys]])
        state = {row[0]: row[1:] for row in cursor.fetchall()}
        increments: list[PointInput] = []
        refused: list[tuple[CumulativeObservation, str]] = []
        saved: list[tuple[uuid.UUID, int, int, float]] = []
        for key in keys:
            start_ns, last_ns, last_value = state[key]
            for o in sorted(by_stream[key], key=lambda o: o.time_ns):
                increase = _increase(o, start_ns, last_ns, last_value)
                if increase is None:
                    continue  # not newer than the last point: already counted
                start_ns, last_ns, last_value = o.start_ns, o.time_ns, o.value
                if increase == 0:
                    continue
                if not value_ok(increase):
                    refused.append((o, f"increase {increase:g} lies beyond ±1e15"))
                    continue
                increments.append(
                    PointInput(
                        type=MetricType.COUNTER,
                        name=o.name,
                        value=increase,
                        timestamp=o.timestamp,
                        tags=o.tags,
                    )
                )
            saved.append((key, start_ns, last_ns, last_value))
        cursor.execute(
            _SAVE,
            [
                [row[0] for row in saved],
                [row[1] for row in saved],
                [row[2] for row in saved],
                [row[3] for row in saved],
            ],
        )
    return Advance(increments, refused)


def _increase(
    o: CumulativeObservation, start_ns: int, last_ns: int | None, last_value: float | None
) -> float | None:
    """The increase `o` brings after the stream's last point; None when `o` is not newer."""
    if last_ns is None or last_value is None:
        # First point of the stream: a run that began before it counts whole.
        return o.value if 0 < o.start_ns < o.time_ns else 0.0
    if o.time_ns <= last_ns:
        return None
    if o.start_ns != start_ns or (o.value < last_value and o.falls_reset):
        return o.value  # a new run (restart or reset): all of it happened since
    return o.value - last_value
