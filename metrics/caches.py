"""Per-process caches of metric and series ids: a write of known series is one statement.

Another process may delete a metric at any time, so a cached id is never trusted on its own:
every write checks, in the statement that writes the points, that its metric and series ids
still exist (`storage.points_write`, by an inline check in its statement). A write that finds
one gone raises `storage.RefsGone`; `services.points_ingest` then clears these caches and writes
again from the database, which recreates the metric. The check costs one index probe per metric
and series of the write, and no Redis round trip.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

from django.db import transaction


@dataclass(frozen=True)
class MetricRef:
    id: int
    name: str
    type: str


_lock = threading.Lock()
metrics: dict[str, MetricRef] = {}
series: dict[tuple[int, uuid.UUID], int] = {}
_MAX = 100_000


def caches_clear() -> None:
    """Drop the metric and series caches (after a metric is deleted, a stale id, or in tests)."""
    with _lock:
        metrics.clear()
        series.clear()


def remember_after_commit(target: dict, items: Mapping) -> None:
    """Cache `items` once the current transaction commits (a rolled-back first write must not
    leave an id behind); at once outside a transaction."""

    def store() -> None:
        with _lock:
            if len(target) + len(items) > _MAX:
                target.clear()
            target.update(items)

    transaction.on_commit(store)


def metric_cached(name: str) -> MetricRef | None:
    return metrics.get(name)


def series_cached(key: tuple[int, uuid.UUID]) -> int | None:
    return series.get(key)
