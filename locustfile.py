"""A load test with the traffic of a fleet of hosts: batches, single counters and values, queries.

    GF_API_KEY=<key with write and read scopes> \\
        locust -f locustfile.py --host http://127.0.0.1:8000 --headless -u 20 -r 5 -t 1m

The target is only ever given by --host. Give the key a rate limit above the load you mean to
send (`manage.py create_api_key load-test --rate-limit 100000`), or the test measures 429s.
Each simulated user is one host: it flushes an agent's batch now and then, increments request
counters and records latencies in between, and reads a dashboard's series from time to time.
"""

from __future__ import annotations

import os
import random
import time
from typing import Any

from locust import HttpUser, between, events, task

API_KEY = os.environ.get("GF_API_KEY", "").strip()

COUNTERS = ("http.requests", "jobs.processed", "cache.misses")
VALUES = ("http.latency_ms", "queue.depth", "cpu.percent", "memory.used_mb")
ENDPOINTS = ("/", "/login", "/search", "/cart", "/checkout")
STATUSES = ("200", "200", "200", "200", "201", "304", "404", "500")
COUNTER_AGGREGATIONS = ("sum", "rate", "count")
VALUE_AGGREGATIONS = ("avg", "max", "p95", "p99")
INTERVALS = ("minute", "minute", "hour")
BATCH_POINTS = 200


def counter_body(rng: random.Random, host: str) -> dict[str, Any]:
    """A request counter; most clients leave the timestamp to the server."""
    return {
        "name": "http.requests",
        "value": 1,
        "tags": {"host": host, "endpoint": rng.choice(ENDPOINTS), "status": rng.choice(STATUSES)},
    }


def value_body(rng: random.Random, host: str, now: float) -> dict[str, Any]:
    return {
        "name": "http.latency_ms",
        "value": round(rng.lognormvariate(3, 0.6), 2),
        "timestamp": round(now, 3),
        "tags": {"host": host, "endpoint": rng.choice(ENDPOINTS)},
    }


def batch_body(rng: random.Random, host: str, now: float) -> dict[str, Any]:
    """What an agent flushes every few seconds: its counters and gauges of the last 10 s."""
    points = []
    for n in range(BATCH_POINTS):
        timestamp = round(now - rng.uniform(0, 10), 3)
        if n % 3 == 0:
            points.append(
                {
                    "type": "counter",
                    "name": rng.choice(COUNTERS),
                    "value": rng.randint(1, 5),
                    "timestamp": timestamp,
                    "tags": {"host": host},
                }
            )
        else:
            name = rng.choice(VALUES)
            points.append(
                {
                    "type": "value",
                    "name": name,
                    "value": round(rng.uniform(0, 100), 3),
                    "timestamp": timestamp,
                    "tags": {"host": host, "unit": name.rsplit("_", 1)[-1]},
                }
            )
    return {"points": points}


def query_params(rng: random.Random, host: str, now: float) -> tuple[str, dict[str, Any]]:
    """A dashboard panel: the last hour of one metric, for one host or split by endpoint."""
    if rng.random() < 0.5:
        name, aggregation = "http.requests", rng.choice(COUNTER_AGGREGATIONS)
    else:
        name, aggregation = "http.latency_ms", rng.choice(VALUE_AGGREGATIONS)
    params: dict[str, Any] = {
        "from": _iso(now - 3600),
        "to": _iso(now),
        "interval": rng.choice(INTERVALS),
        "aggregation": aggregation,
    }
    if rng.random() < 0.5:
        params["tag"] = f"host:{host}"
    else:
        params["group_by"] = "endpoint"
    return name, params


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


@events.init.add_listener
def _require_key(environment: Any, **_: Any) -> None:
    if not API_KEY:
        raise SystemExit(
            "locustfile: GF_API_KEY is not set; create a key with "
            "`manage.py create_api_key load-test --rate-limit 100000`"
        )


class MetricsHost(HttpUser):
    """One monitored host: mostly small writes, a batch now and then, an occasional read."""

    wait_time = between(0.05, 0.5)

    def on_start(self) -> None:
        self.rng = random.Random()
        self.host_tag = f"host-{self.rng.randrange(50):02d}"
        self.client.headers["X-API-Key"] = API_KEY
        # The metrics read_series asks for exist from the start (an unknown metric is a 404).
        self.increment_counter()
        self.record_value()

    @task(10)
    def increment_counter(self) -> None:
        self.client.post("/api/metrics/counter", json=counter_body(self.rng, self.host_tag))

    @task(6)
    def record_value(self) -> None:
        body = value_body(self.rng, self.host_tag, time.time())
        self.client.post("/api/metrics/value", json=body)

    @task(2)
    def flush_batch(self) -> None:
        body = batch_body(self.rng, self.host_tag, time.time())
        self.client.post("/api/metrics/batch", json=body)

    @task(2)
    def read_series(self) -> None:
        name, params = query_params(self.rng, self.host_tag, time.time())
        # One stats row for all names, so the summary reads by endpoint.
        self.client.get(f"/api/metrics/{name}", params=params, name="/api/metrics/[name]")
