"""The client processes of the ingest benchmarks: each sends (or, for the storage ceiling, writes
in-process) in a loop until its window ends and returns the Tally of what finished inside it."""

from __future__ import annotations

import http.client
import multiprocessing
import os
import threading
import time

from bench._loads import BATCH_SIZE, BODIES_PER_CLIENT, batch_points, single_bodies
from bench._tallies import Tally, Window, merge

FORK = multiprocessing.get_context("fork")


# --- batches over HTTP -----------------------------------------------------------------------


def batch_http_client(args: tuple) -> Tally:
    """One process: POST its bodies to /api/metrics/batch in turn; each 201 counts BATCH_SIZE."""
    host, port, key, bodies, window = args
    headers = {"Content-Type": "application/json", "X-API-Key": key}
    conn = http.client.HTTPConnection(host, port, timeout=60)
    tally = Tally()
    i = 0
    while True:
        if time.time() >= window.end:
            break
        conn.request("POST", "/api/metrics/batch", bodies[i % len(bodies)], headers)
        response = conn.getresponse()
        payload = response.read()
        finished = time.time()
        i += 1
        if not window.start <= finished <= window.end:
            continue
        if response.status == 201:
            tally.done += BATCH_SIZE
        else:
            tally.errors += 1
            tally.first_error = tally.first_error or f"{response.status} {payload[:300]!r}"
    conn.close()
    return tally


def batch_http_run(
    host: str, port: int, key: str, bodies: list[list[bytes]], window: Window
) -> Tally:
    """One client process per list of bodies, all inside `window`."""
    jobs = [(host, port, key, client_bodies, window) for client_bodies in bodies]
    with FORK.Pool(len(jobs)) as pool:
        return merge(pool.map(batch_http_client, jobs))


# --- the storage ceiling ---------------------------------------------------------------------


def _batch_direct_client(args: tuple) -> Tally:
    env, client, now, window = args
    # Django is set up only here, after the fork, against the benchmark's database: the driving
    # process stays free of settings and connections (bench/_common.py).
    os.environ.update(env)
    import django

    django.setup()
    from datetime import UTC, datetime

    from glowing_fiesta.gc_tuning import gc_settle

    # As the service's processes do (deploy/gunicorn.conf.py, the Celery pool): the ceiling
    # gets every tuning the measured path gets.
    gc_settle(load_urls=False)

    from django.db import connections

    from metrics.services import PointInput, points_ingest

    batches = [
        [
            PointInput(
                type=p["type"],
                name=p["name"],
                value=float(p["value"]),
                timestamp=datetime.fromtimestamp(p["timestamp"], UTC),
                tags=p["tags"],
            )
            for p in batch_points(client, v, now)
        ]
        for v in range(BODIES_PER_CLIENT)
    ]
    tally = Tally()
    i = 0
    while time.time() < window.end:
        try:
            stored = points_ingest(points=batches[i % len(batches)])
        except Exception as exc:
            tally.errors += 1
            tally.first_error = tally.first_error or repr(exc)[:300]
            stored = 0
        i += 1
        if window.start <= time.time() <= window.end:
            tally.done += stored
    connections.close_all()
    return tally


def batch_direct_run(env: dict[str, str], clients: int, window: Window) -> Tally:
    """The storage ceiling: `points_ingest` in-process from `clients` processes, no HTTP."""
    now = time.time()
    jobs = [(env, c, now, window) for c in range(clients)]
    with FORK.Pool(clients) as pool:
        return merge(pool.map(_batch_direct_client, jobs))


# --- single points at fixed concurrency ------------------------------------------------------


def _single_client(args: tuple) -> Tally:
    host, port, path, key, threads, bodies, window, respond_async = args
    headers = {"Content-Type": "application/json"}
    if key:
        headers["X-API-Key"] = key
    if respond_async:
        headers["Prefer"] = "respond-async"
    expected = 202 if respond_async else 201
    tallies = [Tally() for _ in range(threads)]

    def connection_loop(index: int) -> None:
        tally = tallies[index]
        # Sync gunicorn workers answer "Connection: close"; http.client reconnects by itself.
        conn = http.client.HTTPConnection(host, port, timeout=60)
        i = index
        while time.time() < window.end:
            started = time.perf_counter()
            conn.request("POST", path, bodies[i % len(bodies)], headers)
            response = conn.getresponse()
            payload = response.read()
            elapsed_ms = (time.perf_counter() - started) * 1000
            i += 1
            if not window.start <= time.time() <= window.end:
                continue
            if response.status == expected:
                tally.done += 1
                tally.latencies_ms.append(elapsed_ms)
            else:
                tally.errors += 1
                tally.first_error = tally.first_error or f"{response.status} {payload[:300]!r}"
        conn.close()

    workers = [threading.Thread(target=connection_loop, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return merge(tallies)


def single_run(
    host: str,
    port: int,
    path: str,
    key: str,
    connections: int,
    window: Window,
    *,
    respond_async: bool = False,
) -> Tally:
    """Single counters over `connections` connections, four to a process."""
    # Four connections per process: enough processes that the client side is not bound by one
    # GIL, few enough that they do not crowd the server on two cores.
    processes = max(1, connections // 4)
    per_process = [
        connections // processes + (n < connections % processes) for n in range(processes)
    ]
    jobs = [(host, port, path, key, n, single_bodies(), window, respond_async) for n in per_process]
    with FORK.Pool(processes) as pool:
        return merge(pool.map(_single_client, jobs))
