"""A load test with the traffic of a fleet of hosts: batches, single counters and values, queries.

    GF_API_KEY=<key with write and read scopes> \\
        locust -f locustfile.py --host http://127.0.0.1:8000 --headless -u 20 -r 5 -t 1m

The target is only ever given by --host. Give the key a rate limit above the load you mean to
send (`manage.py create_api_key load-test --rate-limit 100000`), or the test measures 429s.
Each simulated user is one host: it flushes an agent's batch now and then (synchronously, or
with `Prefer: respond-async`), increments request counters and records latencies in between,
and reads a dashboard's series from time to time. `make loadtest` and `make soak`
(`python -m bench.loadtest`, `python -m bench.soak`) run it against gunicorn and a Celery worker.

Optional environment, read at start:

- GF_METRIC_PREFIX: put before every metric name, so one run's points can be counted apart
  from any other's (e.g. `soak_3f2a.`).
- GF_TASKS_PER_SECOND: pace each user at this many tasks per second (locust's
  constant_throughput) instead of a random 0.05 to 0.5 s pause between tasks.
- GF_REPORT_FILE: at the end, write there as JSON the count of every HTTP status received,
  per metric the points the service acknowledged (a 201 or 202), and locust's request stats;
  and, of the requests started within --run-time (all of them without it), the count by route,
  the failed ones by route and the points acknowledged: a rate is these over the run time,
  without the requests the stop's tail lets finish later.
- GF_EVERY_TASK_AT_START: if "1", each user runs every task once when it starts, so that even a
  run of a few seconds sends every route of the mix (the tests' short runs).
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from collections import Counter
from typing import Any

from locust import FastHttpUser, between, constant_throughput, events, task

API_KEY = os.environ.get("GF_API_KEY", "").strip()
PREFIX = os.environ.get("GF_METRIC_PREFIX", "").strip()
TASKS_PER_SECOND = float(os.environ.get("GF_TASKS_PER_SECOND", "0") or 0)
REPORT_FILE = os.environ.get("GF_REPORT_FILE", "").strip()
EVERY_TASK_AT_START = os.environ.get("GF_EVERY_TASK_AT_START", "").strip() == "1"

COUNTERS = ("http.requests", "jobs.processed", "cache.misses")
VALUES = ("http.latency_ms", "queue.depth", "cpu.percent", "memory.used_mb")
# 30 hosts x 5 endpoints x 5 statuses: 750 series of http.requests, and 30 more from the
# batches (tagged by host only), within the service's 1000 series per metric (METRIC_MAX_SERIES).
HOSTS = 30
ENDPOINTS = ("/", "/login", "/search", "/cart", "/checkout")
STATUSES = ("200", "200", "200", "200", "201", "304", "404", "500")
COUNTER_AGGREGATIONS = ("sum", "rate", "count")
VALUE_AGGREGATIONS = ("avg", "max", "p95", "p99")
INTERVALS = ("minute", "minute", "hour")
BATCH_POINTS = 100
# What this process saw: HTTP status -> responses; metric -> points acknowledged (201 or 202).
STATUSES_SEEN: Counter[str] = Counter()
ACKNOWLEDGED: Counter[str] = Counter()
# Of the requests started within the run time, by "METHOD name": all of them, the failed ones.
STARTED_IN_RUN: Counter[str] = Counter()
FAILED_IN_RUN: Counter[str] = Counter()
# The run time's start and end (time.time()), and the points acknowledged to requests started
# before its end.
RUN: dict[str, Any] = {"deadline": math.inf, "points_in_run": 0}


def counter_body(rng: random.Random, host: str) -> dict[str, Any]:
    """A request counter; most clients leave the timestamp to the server."""
    return {
        "name": PREFIX + "http.requests",
        "value": 1,
        "tags": {"host": host, "endpoint": rng.choice(ENDPOINTS), "status": rng.choice(STATUSES)},
    }


def value_body(rng: random.Random, host: str, now: float) -> dict[str, Any]:
    return {
        "name": PREFIX + "http.latency_ms",
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
                    "name": PREFIX + rng.choice(COUNTERS),
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
                    "name": PREFIX + name,
                    "value": round(rng.uniform(0, 100), 3),
                    "timestamp": timestamp,
                    "tags": {"host": host, "unit": name.rsplit("_", 1)[-1]},
                }
            )
    return {"points": points}


def query_params(rng: random.Random, host: str, now: float) -> tuple[str, dict[str, Any]]:
    """A dashboard panel: the last hour of one metric, for one host or split by endpoint."""
    if rng.random() < 0.5:
        name, aggregation = PREFIX + "http.requests", rng.choice(COUNTER_AGGREGATIONS)
    else:
        name, aggregation = PREFIX + "http.latency_ms", rng.choice(VALUE_AGGREGATIONS)
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


def _acknowledge(response: Any, points: list[dict[str, Any]], started: float) -> None:
    STATUSES_SEEN[str(response.status_code)] += 1
    if response.status_code in (201, 202):
        for point in points:
            ACKNOWLEDGED[point["name"]] += 1
        if started < RUN["deadline"]:
            RUN["points_in_run"] += len(points)


@events.test_start.add_listener
def _keep_environment(environment: Any, **_: Any) -> None:
    RUN["environment"] = environment
    # Locust's --run-time timer starts as the test does (in the same instant, to milliseconds).
    run_time = getattr(environment.parsed_options, "run_time", None)
    RUN["started"] = time.time()
    RUN["deadline"] = RUN["started"] + run_time if run_time else math.inf


@events.request.add_listener
def _count_in_run(
    request_type: str, name: str, start_time: float, exception: Any, **_: Any
) -> None:
    if start_time < RUN["deadline"]:
        STARTED_IN_RUN[f"{request_type} {name}"] += 1
        if exception is not None:
            FAILED_IN_RUN[f"{request_type} {name}"] += 1


@events.quit.add_listener
def _write_report(**_: Any) -> None:
    """After the summary is printed and every user stopped: what the run saw, for a script."""
    environment = RUN.get("environment")
    if REPORT_FILE and environment is not None:
        report = {
            "statuses": dict(STATUSES_SEEN),
            "acknowledged": dict(ACKNOWLEDGED),
            "stats": environment.runner.stats.serialize_stats(),
            "in_run": {
                "started": RUN["started"],
                "run_time": getattr(environment.parsed_options, "run_time", None),
                "requests": dict(STARTED_IN_RUN),
                "failures": dict(FAILED_IN_RUN),
                "points": RUN["points_in_run"],
            },
        }
        with open(REPORT_FILE, "w") as file:
            json.dump(report, file)


class MetricsHost(FastHttpUser):
    """One monitored host: mostly small writes, a batch now and then, an occasional read."""

    wait_time = constant_throughput(TASKS_PER_SECOND) if TASKS_PER_SECOND else between(0.05, 0.5)
    default_headers = {"X-API-Key": API_KEY}

    def on_start(self) -> None:
        self.rng = random.Random()
        self.host_tag = f"host-{self.rng.randrange(HOSTS):02d}"
        if TASKS_PER_SECOND:
            # Users spawned together would otherwise send in step, in bursts, all run long.
            time.sleep(self.rng.uniform(0, 1 / TASKS_PER_SECOND))
        # The metrics read_series asks for exist from the start (an unknown metric is a 404).
        self.increment_counter()
        self.record_value()
        if EVERY_TASK_AT_START:
            self.flush_batch()
            self.queue_batch()
            self.read_series()

    def _write(
        self, path: str, body: dict[str, Any], points: list[dict[str, Any]], **kw: Any
    ) -> None:
        started = time.time()
        _acknowledge(self.client.post(path, json=body, **kw), points, started)

    @task(10)
    def increment_counter(self) -> None:
        body = counter_body(self.rng, self.host_tag)
        self._write("/api/metrics/counter", body, [body])

    @task(6)
    def record_value(self) -> None:
        body = value_body(self.rng, self.host_tag, time.time())
        self._write("/api/metrics/value", body, [body])

    @task(1)
    def flush_batch(self) -> None:
        body = batch_body(self.rng, self.host_tag, time.time())
        self._write("/api/metrics/batch", body, body["points"])

    @task(1)
    def queue_batch(self) -> None:
        """The same flush, stored by a worker: the answer is a 202 as soon as it is queued."""
        body = batch_body(self.rng, self.host_tag, time.time())
        self._write(
            "/api/metrics/batch",
            body,
            body["points"],
            headers={"Prefer": "respond-async"},
            name="/api/metrics/batch (async)",
        )

    @task(1)
    def read_series(self) -> None:
        name, params = query_params(self.rng, self.host_tag, time.time())
        # One stats row for all names, so the summary reads by endpoint.
        response = self.client.get(
            f"/api/metrics/{name}", params=params, name="/api/metrics/[name]"
        )
        STATUSES_SEEN[str(response.status_code)] += 1
