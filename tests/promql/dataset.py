"""One synthetic dataset, written to the service and to a reference Prometheus alike.

The series are shaped on the PromLabs demo service that prometheus/compliance scrapes (its
`promql-test-queries.yml` names them): memory, CPU, disk, a histogram of API request durations,
a batch job's last success, an intermittent series. Everything is fixed by a seed: the same
`end` and seed give the same points, so two stores loaded apart hold the same data.

Timestamps: a sample every 15 s at 7.5 s past the quarter minute, moved by a per-series phase
(within ±3 s) and a per-sample jitter (within ±0.2 s), in whole milliseconds (Prometheus's
resolution) and never on a whole second. A range query at whole-second steps therefore never
has a sample on a window's edge, where Prometheus 2 (closed `[t-r, t]`) and 3 (left-open
`(t-r, t]`) differ.

Counters are generated as increments (what the service stores). For Prometheus each counter is
written twice: as its running total under its own name (what a scrape would have seen), and as
the increments themselves, a gauge named `<name>__increments`, so that the service's exact
`increase(c[r])` can be checked against `sum_over_time(c__increments[r])`. Counter increments
are multiples of 1/64, so every running total is exact in binary floating point whatever the
order of summation.

This module imports nothing of the service: a benchmark can load the same data.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

INTERVAL_MS = 15_000
OFFSET_MS = 7_500
PHASE_MS = 3_000
JITTER_MS = 200
DEFAULT_HOURS = 3.0
DEFAULT_SEED = 25
INCREMENTS_SUFFIX = "__increments"
BATCH_SIZE = 1000  # the service's limit of points per batch

JOB = "demo"
INSTANCES = ("demo.promlabs.com:10000", "demo.promlabs.com:10001", "demo.promlabs.com:10002")
MEMORY_TYPES = ("buffers", "cached", "free", "used")
CPU_MODES = ("idle", "system", "user")
# (method, path, status, requests a second, median seconds) of each API endpoint an instance serves.
ENDPOINTS = (
    ("GET", "/api/foo", "200", 12.0, 0.04),
    ("POST", "/api/foo", "200", 3.0, 0.12),
    ("GET", "/api/bar", "500", 0.2, 0.3),
    ("GET", "/api/nonexistent", "404", 0.5, 0.008),
)
BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)  # and +Inf

Kind = Literal["counter", "gauge"]


@dataclass(frozen=True)
class Series:
    """One series: samples are (milliseconds, value); a counter's values are its increments."""

    name: str
    labels: tuple[tuple[str, str], ...]  # sorted by label name
    kind: Kind
    samples: tuple[tuple[int, float], ...]

    @property
    def tags(self) -> dict[str, str]:
        return dict(self.labels)

    def totals(self) -> tuple[tuple[int, float], ...]:
        """A counter's running total, counted from its first sample."""
        total = 0.0
        out = []
        for ms, increment in self.samples:
            total += increment
            out.append((ms, total))
        return tuple(out)


@dataclass(frozen=True)
class Dataset:
    start: int  # Unix seconds, a whole minute; every sample lies in (start, end)
    end: int
    seed: int
    series: tuple[Series, ...]

    def names(self) -> set[str]:
        return {s.name for s in self.series}

    def point_count(self) -> int:
        """The points the service is sent: one per sample."""
        return sum(len(s.samples) for s in self.series)

    def prometheus_series(self) -> Iterator[tuple[str, tuple[tuple[str, str], ...], tuple]]:
        """(name, labels, samples) as Prometheus holds them: gauges as they are; each counter as
        its running total, and its increments as the gauge `<name>__increments`."""
        for s in self.series:
            if s.kind == "gauge":
                yield s.name, s.labels, s.samples
            else:
                yield s.name, s.labels, s.totals()
                yield s.name + INCREMENTS_SUFFIX, s.labels, s.samples

    def prometheus_series_count(self) -> int:
        return sum(1 if s.kind == "gauge" else 2 for s in self.series)

    def prometheus_series_at(self, when: float, lookback: float = 300) -> int:
        """The Prometheus series an instant selector sees at `when`: those with a sample in
        `(when - lookback, when]`."""
        lo, hi = (when - lookback) * 1000, when * 1000
        seen = sum(
            (1 if s.kind == "gauge" else 2)
            for s in self.series
            if any(lo < ms <= hi for ms, _ in s.samples)
        )
        return seen

    def service_points(self) -> Iterator[dict]:
        """Batch points for `POST /api/metrics/batch`: counters as increments, gauges as values.
        Timestamps are ISO 8601 with milliseconds, exact where a float of seconds might not be."""
        for s in self.series:
            kind = "counter" if s.kind == "counter" else "value"
            tags = s.tags
            for ms, value in s.samples:
                yield {
                    "type": kind,
                    "name": s.name,
                    "value": value,
                    "timestamp": _iso(ms),
                    "tags": tags,
                }


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms // 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S") + (
        f".{ms % 1000:03d}Z"
    )


def _rng(seed: int, *parts: str) -> random.Random:
    # One generator per series, keyed by its identity: adding a series changes no other one.
    digest = hashlib.sha256("\x00".join((str(seed), *parts)).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def _dyadic(value: float) -> float:
    """`value` to the nearest 1/64: sums of such numbers are exact."""
    return round(value * 64) / 64


def _times(start: int, end: int, rng: random.Random) -> list[int]:
    """Sample times in ms: every 15 s, 7.5 s past, a per-series phase and per-sample jitter."""
    phase = rng.randint(-PHASE_MS, PHASE_MS)
    times = []
    nominal = start * 1000 + OFFSET_MS
    while nominal < end * 1000:
        ms = nominal + phase + rng.randint(-JITTER_MS, JITTER_MS)
        if ms % 1000 == 0:
            ms += 1  # never on a whole second: see the module's docstring
        times.append(ms)
        nominal += INTERVAL_MS
    return times


def _labels(**labels: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(labels.items()))


def _memory(seed: int, start: int, end: int) -> Iterator[Series]:
    for n, instance in enumerate(INSTANCES):
        total = (8 + 4 * n) * 2**30
        for kind in MEMORY_TYPES:
            rng = _rng(seed, "memory", instance, kind)
            share = {"buffers": 0.05, "cached": 0.25, "free": 0.3, "used": 0.4}[kind]
            level = share * total
            samples = []
            for ms in _times(start, end, rng):
                level = min(max(level + rng.gauss(0, total * 0.002), 0.0), total)
                samples.append((ms, float(round(level))))
            yield Series(
                "demo_memory_usage_bytes",
                _labels(instance=instance, job=JOB, type=kind),
                "gauge",
                tuple(samples),
            )


def _num_cpus(seed: int, start: int, end: int) -> Iterator[Series]:
    for n, instance in enumerate(INSTANCES):
        rng = _rng(seed, "cpus", instance)
        times = _times(start, end, rng)
        # The last instance is resized halfway through: changes() and resets() see one step.
        values = [4.0 if n < 2 or i < len(times) // 2 else 6.0 for i in range(len(times))]
        yield Series(
            "demo_num_cpus",
            _labels(instance=instance, job=JOB),
            "gauge",
            tuple(zip(times, values, strict=True)),
        )


def _disk(seed: int, start: int, end: int) -> Iterator[Series]:
    for n, instance in enumerate(INSTANCES):
        total = float((100 + 50 * n) * 2**30)
        yield Series(
            "demo_disk_total_bytes",
            _labels(instance=instance, job=JOB),
            "gauge",
            tuple((ms, total) for ms in _times(start, end, _rng(seed, "disk_total", instance))),
        )
        rng = _rng(seed, "disk", instance)
        used = total * (0.5 + 0.1 * n)
        growth = (n + 1) * 2**20 / 60  # bytes a second
        samples = []
        for ms in _times(start, end, rng):
            used += growth * 15 + rng.gauss(0, 2**20)
            samples.append((ms, float(round(used))))
        yield Series(
            "demo_disk_usage_bytes", _labels(instance=instance, job=JOB), "gauge", tuple(samples)
        )


def _batch(seed: int, start: int, end: int) -> Iterator[Series]:
    for instance in INSTANCES:
        rng = _rng(seed, "batch", instance)
        last = float(start - rng.randint(60, 600))
        samples = []
        for ms in _times(start, end, rng):
            if rng.random() < 0.08:  # a run succeeded: about one every three minutes
                last = float(ms // 1000 - rng.randint(1, 10))
            samples.append((ms, last))
        yield Series(
            "demo_batch_last_success_timestamp_seconds",
            _labels(instance=instance, job=JOB),
            "gauge",
            tuple(samples),
        )


def _intermittent(seed: int, start: int, end: int) -> Iterator[Series]:
    """Present for a while, then absent: gaps of 1-4 minutes (bridged by the 5 minute lookback)
    and of 6-20 minutes (not bridged)."""
    for instance in INSTANCES:
        rng = _rng(seed, "intermittent", instance)
        times = _times(start, end, rng)
        samples = []
        i = 0
        value = 0.0
        while i < len(times):
            for _ in range(rng.randint(8, 60)):  # present for 2-15 minutes
                if i >= len(times):
                    break
                value += 1.0
                samples.append((times[i], value))
                i += 1
            gap = rng.randint(4, 16) if rng.random() < 0.5 else rng.randint(24, 80)
            i += gap
        yield Series(
            "demo_intermittent_metric",
            _labels(instance=instance, job=JOB),
            "gauge",
            tuple(samples),
        )


def _temperature(seed: int, start: int, end: int) -> Iterator[Series]:
    """Negative, zero and fractional values: an outdoor sensor around freezing, a CPU sensor."""
    for n, instance in enumerate(INSTANCES):
        for sensor, base, swing in (("outdoor", -2.0 - 3 * n, 6.0), ("cpu", 55.0, 10.0)):
            rng = _rng(seed, "temperature", instance, sensor)
            samples = []
            for ms in _times(start, end, rng):
                wave = math.sin(2 * math.pi * (ms / 1000 - start) / 5400)
                samples.append((ms, round(base + swing * wave + rng.gauss(0, 0.4), 1) + 0.0))
            yield Series(
                "demo_temperature_celsius",
                _labels(instance=instance, job=JOB, sensor=sensor),
                "gauge",
                tuple(samples),
            )


def _cpu_seconds(seed: int, start: int, end: int) -> Iterator[Series]:
    for n, instance in enumerate(INSTANCES):
        cpus = 4
        for mode in CPU_MODES:
            rng = _rng(seed, "cpu", instance, mode)
            share = {"idle": 0.7, "system": 0.08, "user": 0.22}[mode]
            samples = []
            for ms in _times(start, end, rng):
                busy = share * (1 + 0.3 * rng.uniform(-1, 1)) * (1 + 0.1 * n)
                samples.append((ms, _dyadic(cpus * 15 * busy)))
            yield Series(
                "demo_cpu_usage_seconds_total",
                _labels(instance=instance, job=JOB, mode=mode),
                "counter",
                tuple(samples),
            )


def _items_shipped(seed: int, start: int, end: int) -> Iterator[Series]:
    """Whole increments, often 0: where Prometheus's extrapolated increase() gives fractions."""
    for instance in INSTANCES:
        rng = _rng(seed, "items", instance)
        samples = [
            (ms, float(rng.choice((0, 0, 0, 1, 1, 2, 3, 5)))) for ms in _times(start, end, rng)
        ]
        yield Series(
            "demo_items_shipped_total",
            _labels(instance=instance, job=JOB),
            "counter",
            tuple(samples),
        )


def _lognormal_cdf(x: float, median: float, sigma: float = 0.8) -> float:
    return 0.5 * (1 + math.erf(math.log(x / median) / (sigma * math.sqrt(2))))


def _histogram(seed: int, start: int, end: int) -> Iterator[Series]:
    """Cumulative `le` buckets (+Inf included), `_sum` and `_count`, all counters: the counts of
    each scrape split by a log-normal latency whose median drifts over the hours."""
    base = "demo_api_request_duration_seconds"
    les = [*(repr(b) for b in BUCKETS), "+Inf"]
    for instance in INSTANCES:
        for method, path, status, per_second, median in ENDPOINTS:
            rng = _rng(seed, "histogram", instance, method, path, status)
            times = _times(start, end, rng)
            buckets: list[list[tuple[int, float]]] = [[] for _ in les]
            sums, counts = [], []
            for ms in times:
                n = max(0, round(rng.gauss(per_second * 15, math.sqrt(per_second * 15))))
                drift = 1 + 0.5 * math.sin(2 * math.pi * (ms / 1000 - start) / 3600)
                m = median * drift
                for i, bound in enumerate(BUCKETS):
                    buckets[i].append((ms, float(round(n * _lognormal_cdf(bound, m)))))
                buckets[-1].append((ms, float(n)))
                sums.append((ms, _dyadic(n * m * math.exp(0.32) * rng.uniform(0.9, 1.1))))
                counts.append((ms, float(n)))
            labels = {"instance": instance, "job": JOB, "method": method, "path": path}
            labels["status"] = status
            for le, samples in zip(les, buckets, strict=True):
                yield Series(f"{base}_bucket", _labels(**labels, le=le), "counter", tuple(samples))
            yield Series(f"{base}_sum", _labels(**labels), "counter", tuple(sums))
            yield Series(f"{base}_count", _labels(**labels), "counter", tuple(counts))


def dataset_build(
    *, end: int | float | datetime, hours: float = DEFAULT_HOURS, seed: int = DEFAULT_SEED
) -> Dataset:
    """The dataset of `hours` ending at `end` (floored to a whole minute)."""
    if isinstance(end, datetime):
        end = end.timestamp()
    end_s = int(end) // 60 * 60
    start_s = end_s - round(hours * 3600) // 60 * 60
    if start_s >= end_s:
        raise ValueError("hours must cover at least a minute")
    series: list[Series] = []
    for family in (
        _memory,
        _num_cpus,
        _disk,
        _batch,
        _intermittent,
        _temperature,
        _cpu_seconds,
        _items_shipped,
        _histogram,
    ):
        series.extend(family(seed, start_s, end_s))
    return Dataset(start=start_s, end=end_s, seed=seed, series=tuple(series))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def dataset_openmetrics(dataset: Dataset, path: Path) -> int:
    """Write what Prometheus holds as OpenMetrics text (for `promtool tsdb
    create-blocks-from openmetrics`); returns the number of samples written. Every family is
    `unknown`: the TSDB keeps no types, and PromQL never reads them."""
    written = 0
    with path.open("w") as out:
        for name, labels, samples in sorted(dataset.prometheus_series()):
            rendered = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
            prefix = f"{name}{{{rendered}}} "
            # Values by repr: the shortest text that parses back to the same float.
            out.writelines(
                f"{prefix}{value!r} {ms // 1000}.{ms % 1000:03d}\n" for ms, value in samples
            )
            written += len(samples)
        out.write("# EOF\n")
    return written


def dataset_load(
    base_url: str,
    api_key: str,
    dataset: Dataset | None = None,
    *,
    headers: Mapping[str, str] | None = None,
    timeout: float = 60,
) -> int:
    """Write `dataset` (by default the one ending at the last whole quarter hour) to the service
    at `base_url` through `POST /api/metrics/batch`, 1000 points a request; returns the points
    stored, as the service counted them. Raises on any answer but 201."""
    if dataset is None:
        now = int(datetime.now(UTC).timestamp())
        dataset = dataset_build(end=now // 900 * 900)
    sent = {"Content-Type": "application/json", "X-API-Key": api_key, **(headers or {})}
    processed = 0
    batch: list[dict] = []
    for point in dataset.service_points():
        batch.append(point)
        if len(batch) == BATCH_SIZE:
            processed += _post_batch(base_url, batch, sent, timeout)
            batch = []
    if batch:
        processed += _post_batch(base_url, batch, sent, timeout)
    return processed


def _post_batch(base_url: str, points: list[dict], headers: dict, timeout: float) -> int:
    body = json.dumps({"points": points}).encode()
    request = urllib.request.Request(  # noqa: S310 - the caller's own service URL
        base_url.rstrip("/") + "/api/metrics/batch", data=body, headers=headers, method="POST"
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
        if response.status != 201:
            raise RuntimeError(f"batch answered {response.status}: {response.read()[:500]!r}")
        return int(json.loads(response.read())["processed"])
