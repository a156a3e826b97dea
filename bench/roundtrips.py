"""Round trips to PostgreSQL and Redis per single-point write, counted by the servers themselves.

    make bench-roundtrips                    # or, with DATABASE_URL set:
    python -m bench.roundtrips --requests 500

Latency on a shared machine moves with whatever else runs on it; the number of round trips a
request makes does not. This serves the service under gunicorn (one worker, deploy's config,
DEBUG off) on a database of its own (gf_bench_roundtrips, dropped at exit) and a private Redis
on a free port (started here, so no other client's commands are counted), sends --requests
single counters one after another over one connection after a warm-up, and reads:

  - PostgreSQL: `xact_commit` of the database in pg_stat_database (each statement of a request
    in autocommit is one transaction: the write, Django's health check when it sends one);
  - Redis: INFO commandstats, every command by name (those a Lua script runs included), and the
    round trips from MONITOR: each command a client sent, a MULTI ... EXEC block counting as
    one and the commands a script runs (MONITOR's "lua" client) as none.

Prints both per request, with the commands by name, and the sequential median latency beside the
bare view's (bench/bare_app.py, same gunicorn): the ceiling, measured in the same run.
"""

from __future__ import annotations

import argparse
import http.client
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from bench import _common, _servers
from glowing_fiesta.devstack import free_port

DATABASE_NAME = "gf_bench_roundtrips"
BODY = json.dumps({"name": "bench.rt", "value": 1, "tags": {"host": "a", "route": "/x"}}).encode()


def redis_start(directory: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    server = shutil.which("redis-server") or "redis-server"
    process = subprocess.Popen(
        [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", directory],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    import redis

    deadline = time.monotonic() + 10
    while True:
        try:
            if redis.Redis(port=port, socket_timeout=0.5).ping():
                return process, port
        except redis.RedisError:
            if time.monotonic() > deadline:
                raise SystemExit("bench: the private Redis did not start") from None
            time.sleep(0.05)


def redis_commands(port: int) -> dict[str, int]:
    import redis

    stats = redis.Redis(port=port).info("commandstats")
    return {name.removeprefix("cmdstat_"): value["calls"] for name, value in stats.items()}


class RoundTrips:
    """Client round trips seen by MONITOR on the private Redis, from a thread, until stopped."""

    def __init__(self, port: int) -> None:
        import threading

        import redis

        self.count = 0
        self._stop = False
        self._port = port
        self._monitor = redis.Redis(port=port).monitor()
        self._monitor.__enter__()  # MONITOR is on once this returns
        self._thread = threading.Thread(target=self._listen, daemon=True)
        self._thread.start()

    def _listen(self) -> None:
        in_multi = False
        for command in self._monitor.listen():
            if self._stop:
                return
            if command.get("client_type") == "lua":
                continue  # run by a script: part of the EVALSHA that started it
            name = command["command"].split(" ", 1)[0].upper()
            if name == "MULTI":
                in_multi = True
            elif name == "EXEC":
                in_multi = False
                self.count += 1
            elif not in_multi:
                self.count += 1

    def stop(self) -> int:
        import redis

        time.sleep(0.3)  # the last commands reach the listener
        self._stop = True
        redis.Redis(port=self._port).ping()  # wakes the listener to see the flag
        self._thread.join(5)
        return self.count  # the PING is read after the flag and not counted


def pg_commits(url: str) -> int:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_force_next_flush()")
        return conn.execute(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()[0]


def send(host: str, port: int, path: str, key: str, n: int) -> list[float]:
    conn = http.client.HTTPConnection(host, port, timeout=30)
    headers = {"Content-Type": "application/json"}
    if key:
        headers["X-API-Key"] = key
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        conn.request("POST", path, body=BODY, headers=headers)
        response = conn.getresponse()
        response.read()
        samples.append((time.perf_counter() - started) * 1000)
        if response.status != 201:
            raise SystemExit(f"bench: {path} answered {response.status}")
    conn.close()
    return samples


def settle(url: str) -> None:
    # pg_stat_database is updated when a backend reports (at most once a second when idle).
    time.sleep(1.2)
    pg_commits(url)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=50)
    args = parser.parse_args(argv)
    database_url = _common.required_env("DATABASE_URL")
    with tempfile.TemporaryDirectory() as directory:
        redis_process, redis_port = redis_start(directory)
        try:
            redis_url = f"redis://127.0.0.1:{redis_port}/0"
            setup_env = _common.service_env(database_url, redis_url)
            with _common.scratch_database(database_url, DATABASE_NAME, setup_env) as url:
                env = _common.service_env(url, redis_url, SELF_METRICS="false")
                machine = _common.machine_summary(url)
                key = _common.api_key_create(env, name="bench-rt", rate_limit=10_000_000)
                with _servers.gunicorn(env, workers=1) as (host, port):
                    send(host, port, "/api/metrics/counter", key, args.warmup)
                    settle(url)
                    commits, commands = pg_commits(url), redis_commands(redis_port)
                    trips = RoundTrips(redis_port)
                    samples = send(host, port, "/api/metrics/counter", key, args.requests)
                    redis_trips = trips.stop()
                    settle(url)
                    commits = pg_commits(url) - commits - 1  # less the reading query
                    after = redis_commands(redis_port)
                bare_env = {**env, "DJANGO_SETTINGS_MODULE": "bench.bare_settings"}
                with _servers.gunicorn(bare_env, workers=1) as (host, port):
                    send(host, port, "/bare/counter", "", args.warmup)
                    bare = send(host, port, "/bare/counter", "", args.requests)
        finally:
            redis_process.terminate()
            redis_process.wait(10)
    delta = {
        name: after.get(name, 0) - commands.get(name, 0)
        for name in after
        if after.get(name, 0) - commands.get(name, 0) and name not in ("info", "monitor", "ping")
    }
    n = args.requests
    print(f"Machine: {machine}")
    print(f"{n} single counters, one connection, gunicorn 1 sync worker, after {args.warmup}")
    print(f"PostgreSQL transactions per request: {commits / n:.2f}")
    print(f"Redis round trips per request:        {redis_trips / n:.2f}")
    print("Redis commands per request:           " + ", ".join(
        f"{name} {count / n:.2f}" for name, count in sorted(delta.items())
    ))  # fmt: skip
    median, bare_median = statistics.median(samples), statistics.median(bare)
    print(
        f"sequential median: {median:.2f} ms; bare view {bare_median:.2f} ms; "
        f"bare/service {bare_median / median:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
