"""Reads over HTTP timed from one sequential client (bench/query.py, bench/explore.py)."""

from __future__ import annotations

import http.client
import json
import time

# The same service's cheapest authenticated endpoint: API-key check, rate limit, tiny JSON.
FLOOR = "floor: GET /api/keys/me"


def http_get(host: str, port: int, key: str, path: str) -> tuple[float, dict]:
    started = time.perf_counter()
    conn = http.client.HTTPConnection(host, port, timeout=60)
    conn.request("GET", path, headers={"X-API-Key": key})
    response = conn.getresponse()
    body = response.read()
    elapsed = (time.perf_counter() - started) * 1000
    conn.close()
    if response.status != 200:
        raise SystemExit(f"bench: GET {path} -> {response.status}: {body[:500]!r}")
    return elapsed, json.loads(body)


def measure_http(host, port, key, paths: dict[str, str], *, requests: int, warmup: int):
    """{label: latencies in ms}, {label: last body}. Requests go round-robin over the shapes,
    so a noisy moment on the shared machine spreads over all of them alike."""
    bodies = {}
    for label, path in paths.items():
        for _ in range(warmup):
            _, bodies[label] = http_get(host, port, key, path)
    samples: dict[str, list[float]] = {label: [] for label in paths}
    for _ in range(requests):
        for label, path in paths.items():
            elapsed, bodies[label] = http_get(host, port, key, path)
            samples[label].append(elapsed)
    return samples, bodies


def ms_text(ms: float) -> str:
    return f"{ms:,.1f}" if ms < 100 else f"{ms:,.0f}"
