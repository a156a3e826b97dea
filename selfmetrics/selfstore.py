"""The service's own figures in its own store: `glowing_fiesta.<name>` metrics, written by a
background flush in each web, worker and StatsD process every SELF_METRICS_INTERVAL seconds.

Why per-process deltas and not one task reading the multiprocess files: the Prometheus files hold
histogram buckets, from which neither the maximum nor an exact p95 can be recovered, and turning
their running totals into increments would need a remembered "last total" per process, kept
consistent across restarts. Here each process keeps, in memory, what happened since its own last
flush, and hands it to `points_ingest` in one batch from a daemon thread, off the request path:

- Counters are exact increments (`glowing_fiesta.requests`, `.ingestion_failures`,
  `.points_ingested`, …): a flush swaps the pending totals out under the lock and writes them,
  so each increment belongs to exactly one flush of exactly one process and is never written
  twice. A flush that fails (PostgreSQL away) puts its counts back for the next one; a process
  killed with SIGKILL loses at most one interval (a normal exit flushes what is left).
- Latencies are `value` metrics (`glowing_fiesta.request_duration_ms` by route, method and
  status, `.db_write_latency_ms`, `.aggregation_latency_ms` …), so avg, max and p95 come from the
  ordinary query API. p95 needs the samples themselves, so each (metric, tags) keeps a bounded
  reservoir per interval: up to SAMPLES_PER_KEY samples are all written, which makes avg, max and
  every percentile exact at low volume (5 requests a second per route and status, per process,
  at the default interval); past that, a uniform random sample of SAMPLES_PER_KEY (Vitter's
  algorithm R) plus the interval's true maximum, so max stays exact and avg and p95 are
  estimates from a uniform sample, while the write costs the same at any traffic. Exact request
  counts are the `glowing_fiesta.requests` counter.

A process writes its own figures only when SELF_METRICS is on and it is a web, worker or
StatsD process (settings.PROCESS_ROLE); management commands and the test runner only record to
Prometheus. The flush uses a connection of its own thread and closes it afterwards, so it holds
no PostgreSQL connection between flushes.
"""

from __future__ import annotations

import atexit
import logging
import random
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from django.conf import settings
from django.db import connection
from django.utils import timezone

from glowing_fiesta import monitoring
from glowing_fiesta.exceptions import Problem
from glowing_fiesta.monitoring.sink import Tags
from metrics.services import PointInput, points_ingest

from .collectors import ScrapeTimeCollector

logger = logging.getLogger(__name__)

PREFIX = "glowing_fiesta."
SAMPLES_PER_KEY = 50
WRITER_ROLES = frozenset({"web", "worker", "statsd"})


@dataclass
class Reservoir:
    """The samples of one (metric, tags) in one interval: all of them up to `size`, then a
    uniform random sample of `size`, and always the exact maximum."""

    size: int = SAMPLES_PER_KEY
    seen: int = 0
    maximum: float = float("-inf")
    samples: list[float] = field(default_factory=list)

    def add(self, value: float) -> None:
        self.seen += 1
        if value > self.maximum:
            self.maximum = value
        if len(self.samples) < self.size:
            self.samples.append(value)
            return
        slot = random.randrange(self.seen)
        if slot < self.size:
            self.samples[slot] = value

    def values(self) -> list[float]:
        if self.seen > len(self.samples) and self.maximum not in self.samples:
            return [*self.samples, self.maximum]
        return list(self.samples)


class SelfStore:
    """One process's pending figures and the thread that flushes them: the sink of the
    recording calls (glowing_fiesta/monitoring/sink.py)."""

    def __init__(self, *, interval: float) -> None:
        self.interval = interval
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, Tags], float] = {}
        self._samples: dict[tuple[str, Tags], Reservoir] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- recording (any thread) --------------------------------------------------------------

    def count(self, name: str, tags: Tags, amount: float = 1) -> None:
        key = (name, tags)
        with self._lock:
            self._counts[key] = self._counts.get(key, 0) + amount

    def sample(self, name: str, tags: Tags, value: float) -> None:
        with self._lock:
            self._add_sample((name, tags), value)

    def request(self, tags: Tags, duration_ms: float) -> None:
        """One request: its count and its duration, under one acquisition of the lock."""
        with self._lock:
            key = ("requests", tags)
            self._counts[key] = self._counts.get(key, 0) + 1
            self._add_sample(("request_duration_ms", tags), duration_ms)

    def db_write(self, latency_ms: float, points: int) -> None:
        with self._lock:
            self._add_sample(("db_write_latency_ms", ()), latency_ms)
            self._add_sample(("db_write_points", ()), points)

    def _add_sample(self, key: tuple[str, Tags], value: float) -> None:
        reservoir = self._samples.get(key)
        if reservoir is None:
            reservoir = self._samples[key] = Reservoir()
        reservoir.add(value)

    # --- flushing ----------------------------------------------------------------------------

    def take(self) -> tuple[dict[tuple[str, Tags], float], dict[tuple[str, Tags], Reservoir]]:
        """Everything pending, leaving nothing behind: what a flush writes."""
        with self._lock:
            counts, self._counts = self._counts, {}
            samples, self._samples = self._samples, {}
        return counts, samples

    def give_back(self, counts: dict[tuple[str, Tags], float]) -> None:
        # Samples of a failed flush are dropped (the next interval has its own); counts are
        # not, so the totals stay exact.
        with self._lock:
            for key, amount in counts.items():
                self._counts[key] = self._counts.get(key, 0) + amount

    def flush(self, *, now: datetime) -> int:
        """Write what is pending as one `points_ingest` batch timestamped `now`; return the
        number of points written. A domain error (a metric of ours created with another type)
        drops the batch with a warning; a database error puts the counts back and re-raises."""
        counts, samples = self.take()
        points = list(_points(counts, samples, now))
        if not points:
            return 0
        try:
            with monitoring.ingest_path("self"):
                return points_ingest(points=points)
        except Problem as problem:
            logger.warning(
                "own figures not stored",
                extra={"error": f"{problem.title}: {problem.detail}", "points": len(points)},
            )
            return 0
        except Exception:
            self.give_back(counts)
            raise

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="self-metrics", daemon=True)
        self._thread.start()
        # A normal exit writes what the last interval gathered.
        atexit.register(self.stop)

    def stop(self) -> None:
        """Stop the thread and write what is left (at process exit)."""
        self._stop.set()
        self.flush_quietly()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.flush_quietly()

    def flush_quietly(self) -> None:
        try:
            self.flush(now=timezone.now())
        except Exception:
            logger.warning("own figures not stored; kept for the next flush", exc_info=True)
        finally:
            # This thread's connection is not kept between flushes.
            connection.close()


def _points(counts: dict, samples: dict, now: datetime) -> Iterable[PointInput]:
    for (name, tags), amount in sorted(counts.items()):
        if amount:
            yield PointInput("counter", PREFIX + name, float(amount), now, dict(tags))
    for (name, tags), reservoir in sorted(samples.items(), key=lambda item: item[0]):
        for value in reservoir.values():
            yield PointInput("value", PREFIX + name, float(value), now, dict(tags))


def store_for_process() -> SelfStore | None:
    """A started store for this process, or None where the process does not write its own
    figures: the sink factory registered in SelfmetricsConfig.ready(), called once per process
    on its first figure (after any fork)."""
    if not (settings.SELF_METRICS and settings.PROCESS_ROLE in WRITER_ROLES):
        return None
    store = SelfStore(interval=settings.SELF_METRICS_INTERVAL)
    store.start()
    return store


def gauges_store(*, now: datetime) -> int:
    """Write the gauges that /metrics reads at scrape time (queue depth, broker queue,
    connections) as `glowing_fiesta.*` value points at `now`; return the points written.

    One beat-scheduled task runs this every SELF_METRICS_INTERVAL seconds, so each gauge is
    written once per interval, whichever worker takes it, rather than once per process.
    """
    points = [
        PointInput("value", PREFIX + sample.name.removeprefix("glowing_fiesta_"), float(sample.value), now, dict(sample.labels))
        for family in ScrapeTimeCollector().collect()
        for sample in family.samples
    ]  # fmt: skip
    with monitoring.ingest_path("self"):
        return points_ingest(points=points)
