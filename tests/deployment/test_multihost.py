"""The service on several hosts (deploy/multihost: each host a network namespace), under a mixed
load through `lb` while every process of `web1` is SIGKILLed, the replica restarted and the worker
killed: every acknowledged point is stored exactly once, nothing answers a 5xx but 503 with
Retry-After, cumulative counters sent alternately to web1 and web2 stay exact, a key's rate limit
is counted across both web hosts, and the replica, once caught up, answers every aggregation
exactly as the primary does.

`deploy/multihost/up` and `down` are run as they ship; the faults use the same script's `kill` and
`start` (imported). The web and worker hosts reach the primary through PgBouncer (transaction
pooling, DB_PREPARED_STATEMENTS=false); the checks read PostgreSQL directly. Everything is torn down with `down`, whatever happened, and the hosts' logs
are shown with a failure. Needs root (network namespaces), nginx, PostgreSQL, redis-server and
rabbitmq-server from Debian.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import requests

from tests.reliability.harness import tail, wait_until
from tests.reliability.ledger import Ledger
from tests.reliability.reporting import Promises

pytestmark = pytest.mark.multihost

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "deploy" / "multihost"
HARD_TIMEOUT_SECONDS = 300
RATE_LIMIT = 12  # per minute, for the key whose limit is checked across hosts
OTLP_METRIC = "multihost.requests"
LINE_METRIC = "multihost_line"


def _load_script():
    spec = importlib.util.spec_from_file_location("gf_multihost", SCRIPTS / "multihost.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def topology() -> Iterator[object]:
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    multihost = _load_script()
    prefix = f"gft{secrets.token_hex(1)}"
    # A /24 of its own per run, so two runs on one machine never meet.
    net = f"10.231.{secrets.randbelow(150) + 100}"
    directory = Path(tempfile.mkdtemp(prefix="gf-multihost-")) / "hosts"
    directory.parent.chmod(0o755)  # the postgres and rabbitmq users work in there
    args = ["--prefix", prefix, "--dir", str(directory), "--net", net]
    env = {**os.environ, "PYTHON": sys.executable}

    def expire(signum, frame) -> None:
        raise TimeoutError(f"the multi-host test ran past {HARD_TIMEOUT_SECONDS} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, HARD_TIMEOUT_SECONDS)
    try:
        result = subprocess.run(  # noqa: S603 - the project's own script
            [str(SCRIPTS / "up"), *args], env=env, capture_output=True, text=True, timeout=240
        )
        if result.returncode:
            pytest.fail(f"up failed:\n{result.stderr[-3000:]}\n{_logs(directory)}")
        yield multihost.Topology(prefix, directory, net)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        logs = _logs(directory)
        down = subprocess.run(  # noqa: S603 - the project's own script
            [str(SCRIPTS / "down"), *args], env=env, capture_output=True, text=True, timeout=120
        )
        shutil.rmtree(directory.parent, ignore_errors=True)
        left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout  # noqa: S607
        assert down.returncode == 0, down.stderr
        assert f"{prefix}-" not in left, f"down left namespaces behind:\n{left}\n{logs}"


def _logs(directory: Path) -> str:
    paths = sorted((directory / "logs").glob("*.log")) + sorted(directory.glob("db*/postgres.log"))
    return "\n".join(f"--- {p} ---\n{tail(p, 15)}" for p in paths)


# --- the clients besides the JSON ledger -----------------------------------------------------


class OtlpCounter:
    """One OTLP cumulative counter stream, each export sent to web1 and web2 in turn (the other
    one on failure, the same cumulative value again): the stored increments must add up to the
    last acknowledged total."""

    def __init__(self, urls: list[str], key: str) -> None:
        self.urls = urls
        self.key = key
        self.start_ns = time.time_ns() - 1_000_000_000
        self.total = 0
        self.acknowledged = 0
        self.statuses: list[tuple[int, str | None]] = []

    def export(self, turn: int) -> None:
        self.total += 1 + turn % 3
        body = {
            "resourceMetrics": [
                {
                    "resource": {
                        "attributes": [
                            {"key": "service.name", "value": {"stringValue": "multihost"}}
                        ]
                    },
                    "scopeMetrics": [
                        {
                            "metrics": [
                                {
                                    "name": OTLP_METRIC,
                                    "sum": {
                                        "aggregationTemporality": 2,
                                        "isMonotonic": True,
                                        "dataPoints": [
                                            {
                                                "asInt": str(self.total),
                                                "startTimeUnixNano": str(self.start_ns),
                                                "timeUnixNano": str(time.time_ns()),
                                            }
                                        ],
                                    },
                                }
                            ]
                        }
                    ],
                }
            ]
        }
        for attempt in range(60):
            url = self.urls[(turn + attempt) % len(self.urls)]
            try:
                response = requests.post(
                    f"{url}/v1/metrics",
                    data=json.dumps(body),
                    headers={
                        "Authorization": f"Bearer {self.key}",
                        "Content-Type": "application/json",
                    },
                    timeout=35,
                )
            except requests.RequestException:
                time.sleep(0.2)
                continue
            self.statuses.append((response.status_code, response.headers.get("Retry-After")))
            if response.status_code == 200:
                self.acknowledged = self.total
                return
            time.sleep(0.5)
        raise AssertionError(
            f"OTLP export of {self.total} never acknowledged: {self.statuses[-3:]}"
        )


class LineWriter:
    """InfluxDB line protocol through lb, each write one line with an Idempotency-Key, retried
    with the same key until a 2xx."""

    def __init__(self, base: str, key: str) -> None:
        self.base = base
        self.key = key
        self.acknowledged: list[int] = []
        self.statuses: list[tuple[int, str | None]] = []

    def write(self, number: int) -> None:
        key = f"line-{secrets.token_hex(8)}"
        body = f"{LINE_METRIC},host=mh value={number} {time.time_ns()}"
        for _ in range(120):
            try:
                response = requests.post(
                    f"{self.base}/write?db=multihost",
                    data=body,
                    headers={"Authorization": f"Token {self.key}", "Idempotency-Key": key},
                    timeout=35,
                )
            except requests.RequestException:
                time.sleep(0.25)
                continue
            self.statuses.append((response.status_code, response.headers.get("Retry-After")))
            if 200 <= response.status_code < 300:
                self.acknowledged.append(number)
                return
            if response.status_code < 500 and response.status_code not in (409, 429):
                raise AssertionError(f"line write refused: {response.status_code} {response.text}")
            time.sleep(0.25)
        raise AssertionError(f"line write {number} never acknowledged: {self.statuses[-3:]}")


def _bad_5xx(statuses: list[tuple[int, str | None]]) -> list[tuple[int, str | None]]:
    return [(s, r) for s, r in statuses if s >= 500 and not (s == 503 and r)]


# --- the test ----------------------------------------------------------------------------------


def _rate_limit_across_hosts(topology, key: str) -> list[str]:
    """Requests of one key sent to web1 and web2 in turn draw on one counter (in Redis)."""
    urls = [f"http://{topology.ip(h)}:8000" for h in ("web1", "web2")]
    for _ in range(3):  # a window that ends in the middle is tried again
        answers = []
        for n in range(RATE_LIMIT + 6):
            response = requests.get(
                f"{urls[n % 2]}/api/metrics", headers={"X-API-Key": key}, timeout=10
            )
            answers.append((n % 2, response.status_code, response.headers.get("X-RateLimit-Reset")))
        if len({reset for _, _, reset in answers}) == 1:
            break
    served = [(host, status) for host, status, _ in answers if status == 200]
    limited = [status for _, status, _ in answers if status == 429]
    problems = []
    if len(served) != RATE_LIMIT or len(limited) != 6 or {h for h, _ in served} != {0, 1}:
        problems.append(
            f"a key limited to {RATE_LIMIT} a minute gets {RATE_LIMIT} answers in a minute "
            f"whichever web host serves it: {answers}"
        )
    return problems


def _replica_scans(replica: psycopg.Connection) -> int:
    """Table scans the replica has run for queries (the lag checks read no table)."""
    return replica.execute(
        "SELECT coalesce(sum(coalesce(seq_scan, 0) + coalesce(idx_scan, 0)), 0) "
        "FROM pg_stat_user_tables WHERE relname LIKE 'metric%%' OR relname = 'series'"
    ).fetchone()[0]


def _api_answers(lb: str, key: str, since: int, until: int) -> dict[str, object]:
    """The aggregation API's and discovery's answers for the metrics the load wrote."""
    answers: dict[str, object] = {}
    for metric in ("fault.ledger", LINE_METRIC, OTLP_METRIC):
        for interval in ("minute", "hour", "day"):
            for aggregation in ("sum", "count", "max"):
                query = f"/api/metrics/{metric}?from={since}&to={until}"
                query += f"&interval={interval}&aggregation={aggregation}"
                response = requests.get(f"{lb}{query}", headers={"X-API-Key": key}, timeout=30)
                answers[query] = (response.status_code, response.json())
    response = requests.get(f"{lb}/api/metrics", headers={"X-API-Key": key}, timeout=30)
    answers["/api/metrics"] = (response.status_code, response.json())
    return answers


def _replica_caught_up(primary: psycopg.Connection, replica: psycopg.Connection) -> bool:
    target = primary.execute("SELECT pg_current_wal_lsn()").fetchone()[0]
    replayed = replica.execute("SELECT pg_last_wal_replay_lsn()").fetchone()[0]
    return replica.execute("SELECT %s::pg_lsn >= %s::pg_lsn", [replayed, target]).fetchone()[0]


# Aggregations as the API asks them (per metric and tag set, per bucket), over every table a
# read may use: the replica must give the same answer as the primary.
AGGREGATIONS = {
    "points": "SELECT metric_id, series_id, count(*), sum(value), min(value), max(value) "
    "FROM metric_points GROUP BY 1, 2 ORDER BY 1, 2",
    **{
        table: f"SELECT series_id, bucket, count, sum, min, max FROM {table} ORDER BY 1, 2"
        for table in (
            "metric_rollup_minute",
            "metric_rollup_15m",
            "metric_rollup_hour",
            "metric_rollup_day",
        )
    },
    "metrics": "SELECT id, name FROM metrics ORDER BY id",
    "series": "SELECT id, metric_id, tags::text FROM series ORDER BY id",
}


def test_several_hosts_keep_every_promise_through_lost_hosts(topology):
    lb = f"http://{topology.ip('lb')}"
    key = topology.manage("worker", "create_api_key", "multihost", "--rate-limit", "10000000")
    key = key.strip().splitlines()[-1].strip()
    limited_key = topology.manage(
        "worker", "create_api_key", "multihost-limited", "--rate-limit", str(RATE_LIMIT)
    )
    limited_key = limited_key.strip().splitlines()[-1].strip()
    # A key that never writes: its reads are never sent to the primary to read its own writes.
    reader = topology.manage("worker", "create_api_key", "multihost-reader", "--scopes", "read")
    reader = reader.strip().splitlines()[-1].strip()
    since = int(time.time()) - 3600
    ledger = Ledger(lb, key, retry_for=90)
    promises = Promises(ledger)
    for problem in _rate_limit_across_hosts(topology, limited_key):
        promises.check(False, problem)

    otlp = OtlpCounter([f"http://{topology.ip(h)}:8000" for h in ("web1", "web2")], key)
    lines = LineWriter(lb, key)
    stop = threading.Event()
    errors: list[BaseException] = []

    def keep(send) -> None:
        try:
            for turn in itertools.count():
                if stop.is_set():
                    return
                send(turn)
                stop.wait(0.05)
        except BaseException as exc:  # reported by the test
            errors.append(exc)

    others = [
        threading.Thread(target=keep, args=(otlp.export,), daemon=True),
        threading.Thread(target=keep, args=(lines.write,), daemon=True),
    ]
    with ledger.load(sync=2, asynchronous=2, pace=0.05):
        for thread in others:
            thread.start()
        wait_until(lambda: len(ledger.writes) >= 20, timeout=60, what="writes before the faults")
        # web1 lost at once: gunicorn's arbiter and workers and its StatsD listener.
        topology.kill("web1")
        written = len(ledger.writes)
        wait_until(lambda: len(ledger.writes) >= written + 20, timeout=60, what="writes on web2")
        topology.start("web1")
        # The replica restarted: it reconnects to the primary and catches up.
        topology.pg_stop("db2")
        topology.start("db2")
        # The worker host lost once (worker and beat), its messages unacknowledged on mq.
        topology.kill("worker")
        written = len(ledger.writes)
        wait_until(lambda: len(ledger.writes) >= written + 20, timeout=60, what="writes later")
        topology.start("worker")
        wait_until(lambda: otlp.acknowledged >= 20, timeout=60, what="OTLP exports")
        stop.set()
        for thread in others:
            thread.join(120)
    promises.check(not errors, f"the OTLP and line clients ran to the end: {errors}")

    bad = _bad_5xx(
        [(a.status, a.retry_after) for a in ledger.attempts() if a.status is not None]
        + lines.statuses
        + otlp.statuses
    )
    promises.check(not bad, f"no 5xx but 503 with Retry-After: {bad[:10]}")
    env = topology.env()
    with (
        psycopg.connect(topology.primary_url(), autocommit=True) as primary,
        psycopg.connect(env["DATABASE_REPLICA_URL"], autocommit=True) as replica,
    ):
        promises.ledger_exact(ledger.problems(primary, settle=90))
        clients = dict(
            primary.execute(
                "SELECT host(client_addr), count(*) FROM pg_stat_activity "
                "WHERE datname = %s AND client_addr IS NOT NULL GROUP BY 1",
                [topology.env()["DATABASE_URL"].rsplit("/", 1)[1]],
            ).fetchall()
        )
        apps = {topology.ip(h) for h in ("web1", "web2", "worker")}
        promises.check(
            clients.get(topology.ip("db1")) and not apps & set(clients),
            f"web and worker hosts reach the primary through PgBouncer only: {clients}",
        )
        line_rows = dict(
            primary.execute(
                "SELECT p.value::bigint, count(*) FROM metric_points p JOIN metrics m "
                "ON m.id = p.metric_id WHERE m.name = %s GROUP BY 1",
                [LINE_METRIC],
            ).fetchall()
        )
        wrong = {n: line_rows.get(n, 0) for n in lines.acknowledged if line_rows.get(n) != 1}
        promises.check(
            lines.acknowledged and not wrong,
            f"every acknowledged line stored once: {len(wrong)} of {len(lines.acknowledged)} "
            f"not, e.g. {list(wrong.items())[:5]}",
        )
        stored = primary.execute(
            "SELECT coalesce(sum(p.value), 0) FROM metric_points p JOIN metrics m "
            "ON m.id = p.metric_id WHERE m.name = %s",
            [OTLP_METRIC],
        ).fetchone()[0]
        promises.check(
            stored == otlp.acknowledged,
            f"the cumulative counter exported alternately to web1 and web2 adds up to its last "
            f"acknowledged total {otlp.acknowledged}: stored {stored}",
        )
        wait_until(
            lambda: _replica_caught_up(primary, replica), timeout=60, what="the replica to catch up"
        )
        for name, query in AGGREGATIONS.items():
            ours, theirs = primary.execute(query).fetchall(), replica.execute(query).fetchall()
            promises.check(
                ours == theirs and ours,
                f"{name}: the replica holds what the primary holds ({len(theirs)} rows against "
                f"{len(ours)})",
            )
        # The API through lb, read by web1 and web2 from the replica (DATABASE_REPLICA_URL):
        # its table scans grow while they answer. The replica was restarted during the load,
        # so the first answers may still come from the primary (left alone for a few seconds).
        answered: dict[str, object] = {}
        until = int(time.time()) + 120

        def from_replica() -> bool:
            before = _replica_scans(replica)
            answered.update(_api_answers(lb, reader, since, until))
            return _replica_scans(replica) > before + len(answered) // 2

        wait_until(from_replica, timeout=60, what="the aggregation API to read from the replica")
        # The same queries with the replica stopped: the primary answers them.
        topology.pg_stop("db2")
        on_primary = _api_answers(lb, reader, since, until)
        differ = [q for q in answered if answered[q] != on_primary[q]]
        promises.check(
            not differ and all(status == 200 for status, _ in answered.values()),
            f"every aggregation the replica answered equals the primary's answer: {len(differ)} "
            f"of {len(answered)} differ, e.g. {differ[:1]} "
            f"{[(answered[q], on_primary[q]) for q in differ[:1]]}",
        )
        promises.check(
            all(status == 200 for status, _ in on_primary.values()),
            f"with the replica down the primary answers, never an error: {on_primary}",
        )
    # Every web host lost: lb answers for them, in the service's shape, with Retry-After.
    topology.kill("web1")
    topology.kill("web2")
    response = requests.post(
        f"{lb}/api/metrics/batch", json={"points": []}, headers={"X-API-Key": key}, timeout=30
    )
    promises.check(
        response.status_code == 503
        and response.headers.get("Retry-After") == "1"
        and response.headers.get("Content-Type", "").startswith("application/problem+json")
        and response.json()["status"] == 503,
        f"with no web host left lb answers 503 problem+json with Retry-After: "
        f"{response.status_code} {response.headers} {response.text[:300]}",
    )
    if promises.broken:
        promises.broken.append(_logs(topology.dir))
    promises.assert_kept()
