"""The ingest workload of the benchmarks: 1000-point JSON batches as a metrics agent sends them,
and the bodies of single counters."""

from __future__ import annotations

import json

BATCH_SIZE = 1000
# Forty metrics (half counters, half values) x five slots per client host: 200 series per
# client, each touched five times per batch, timestamps spread over the last few seconds.
METRICS = [f"bench.counter.{i:02d}" for i in range(20)] + [
    f"bench.value.{i:02d}" for i in range(20)
]
SLOTS = 5
BODIES_PER_CLIENT = 8


def batch_points(client: int, variant: int, now: float) -> list[dict]:
    """One 1000-point batch as the JSON-ready list a metrics agent would send."""
    points = []
    for j in range(BATCH_SIZE):
        name = METRICS[j % len(METRICS)]
        kind = "counter" if name.startswith("bench.counter") else "value"
        points.append(
            {
                "type": kind,
                "name": name,
                "value": 1 if kind == "counter" else float((j * 7 + variant) % 97),
                "timestamp": round(now - (j % 50) * 0.1 - variant * 0.01, 3),
                "tags": {"host": f"host-{client}", "slot": str((j // len(METRICS)) % SLOTS)},
            }
        )
    return points


def batch_bodies(client: int, now: float) -> list[bytes]:
    """A client's BODIES_PER_CLIENT encoded batches, each of other values and timestamps."""
    return [
        json.dumps({"points": batch_points(client, v, now)}).encode()
        for v in range(BODIES_PER_CLIENT)
    ]


def clients_batch_bodies(clients: int, now: float) -> list[list[bytes]]:
    """batch_bodies for each of `clients` client hosts."""
    return [batch_bodies(c, now) for c in range(clients)]


def single_bodies() -> list[bytes]:
    return [
        json.dumps({"name": "bench.single", "value": 1, "tags": {"host": f"host-{n}"}}).encode()
        for n in range(8)
    ]
