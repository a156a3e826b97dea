"""Reads from a streaming replica (glowing_fiesta/db/replica.py), on a private primary and its
replica (`pg_basebackup -R`), through gunicorn's HTTP API.

Which server answered is proven, not assumed: the replica logs every statement with its client's
application_name (the web process's replica connection is `glowing-fiesta-web-replica`), and a
replica whose replay is paused answers with data the primary has moved past.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
import requests

from glowing_fiesta.devstack import free_port

from .harness import (
    ROOT,
    PgCluster,
    PgReplica,
    RedisServer,
    Stack,
    running_stack,
    stack_env,
    wait_until,
)

pytestmark = pytest.mark.fault(timeout=240)

BOUND = 8  # REPLICA_MAX_LAG_SECONDS of these stacks
REPLICA_APP = "glowing-fiesta-web-replica"
# What every read of the API reads, and the PromQL reads: the rollups, points and series, and
# the functions that read raw and compacted days alike.
READ_TABLES = (
    "metric_rollup",
    "metric_points",
    "series",
    "metrics",
    "gf_points",
    "gf_rollup_minute",
)


class Client:
    def __init__(self, stack: Stack, key: str, metric: str) -> None:
        self.base = stack.base_url
        self.metric = metric
        self.session = requests.Session()
        self.session.headers["X-API-Key"] = key

    def write(self, values: list[float], *, at: datetime, tags: dict | None = None) -> None:
        points = [
            {"type": "value", "name": self.metric, "value": v, "tags": tags or {"host": f"h{i % 3}"},
             "timestamp": (at + timedelta(seconds=i)).isoformat()}
            for i, v in enumerate(values)
        ]  # fmt: skip
        response = self.session.post(f"{self.base}/api/metrics/batch", json={"points": points})
        assert response.status_code == 201, response.text

    def get(self, path: str, **params: str) -> dict:
        response = self.session.get(f"{self.base}{path}", params=params, timeout=30)
        assert response.status_code == 200, (
            f"{path} {params}: {response.status_code} {response.text}"
        )
        return response.json()

    def count(self, since: datetime) -> int:
        """Points of the metric since `since`, from the aggregation API."""
        body = self.get(
            f"/api/metrics/{self.metric}", **{"from": since.isoformat(), "to": _later(since)},
            interval="day", aggregation="count",
        )  # fmt: skip
        return sum(b["value"] for b in body["buckets"])

    def promql_count(self, at: datetime) -> float:
        body = self.get(
            "/api/v1/query",
            query=f"sum(count_over_time({self.metric}[2h]))",
            time=str(at.timestamp()),
        )
        result = body["data"]["result"]
        return float(result[0]["value"][1]) if result else 0.0


def _later(since: datetime) -> str:
    return (since + timedelta(days=2)).isoformat()


def _replica_reads(replica: PgReplica, since: int) -> list[str]:
    """The reads of the API the replica served after byte `since` of its log."""
    return [
        s
        for s in replica.statements_by(REPLICA_APP, since=since)
        if any(table in s for table in READ_TABLES) and "pg_is_in_recovery" not in s
    ]


def _wait_served_by_replica(
    replica: PgReplica, answer_ok, *, what: str = "the reader's query served by the replica"
) -> None:
    """Until a read answers as `answer_ok` expects and the replica's log shows it served it."""

    def served() -> bool:
        mark = replica.log_size()
        return bool(answer_ok()) and bool(_replica_reads(replica, mark))

    wait_until(served, timeout=30, what=what)


def _fresh_commit(pg: PgCluster) -> None:
    """A commit on the primary, so the replica's last replayed commit is from now."""
    with pg.connect() as conn:
        conn.execute("SELECT txid_current()")


@pytest.fixture(scope="module")
def _replicated_stack(pg_template):
    """One stack for the module, whose web process reads from a streaming replica of its
    primary. The replica is made after the primary started (the first reads find it down and
    use the primary). Its directory is kept when a test fails."""
    replica_port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="gf-fault-replica-"))
    env = {
        "DATABASE_REPLICA_URL": f"postgresql://postgres@127.0.0.1:{replica_port}/gf",
        "REPLICA_MAX_LAG_SECONDS": str(BOUND),
    }
    with running_stack(pg_template, workdir, worker=False, web_workers=1, env=env) as stack:
        writer_key = stack.api_key
        reader_key = stack.create_api_key()
        replica = PgReplica.create(stack.pg, port=replica_port, log_statements=True)
        try:
            replica.start()
            replica.wait_caught_up(stack.pg)
            yield stack, replica, writer_key, reader_key
        finally:
            replica.destroy()


@pytest.fixture
def replicated(_replicated_stack, request):
    """(stack, replica, writer, reader) with clients on a metric of this test's own."""
    stack, replica, writer_key, reader_key = _replicated_stack
    request.node._fault_stack = stack
    # As a test that failed may have left it: stopped, or its replay paused.
    if not replica.running():
        replica.start()
    replica.replay_resume()
    replica.wait_caught_up(stack.pg)
    metric = f"rep_{request.node.name[5:30]}"
    return stack, replica, Client(stack, writer_key, metric), Client(stack, reader_key, metric)


def test_reads_come_from_the_replica_within_the_bound_and_a_key_reads_its_own_writes(replicated):
    stack, replica, writer, reader = replicated
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)
    writer.write([1.0] * 10, at=t0)
    replica.wait_caught_up(stack.pg)

    # The reader's queries reach the replica (once its first, failed, connection is retried).
    _wait_served_by_replica(replica, lambda: reader.count(t0) == 10)

    _fresh_commit(stack.pg)
    replica.wait_caught_up(stack.pg)
    replica.replay_pause()
    writer.write([2.0] * 5, at=t0 + timedelta(minutes=1))
    acknowledged = time.time()

    # Read-your-writes: the key that wrote reads the primary.
    assert writer.count(t0) == 15
    assert writer.promql_count(t0 + timedelta(minutes=5)) == 15
    # Another key reads the paused replica: older data, within the bound.
    mark = replica.log_size()
    first = reader.count(t0), reader.promql_count(t0 + timedelta(minutes=5))
    assert time.time() < acknowledged + BOUND, "the host is too slow for this test's bound"
    assert first == (10, 10.0), "within the bound the replica answers, with what it replayed"
    assert _replica_reads(replica, mark), "those reads were the replica's"

    # Past the bound the primary answers; no answer is older than the bound.
    answers: list[tuple[float, int]] = []

    def primary_answers() -> bool:
        answers.append((time.time(), reader.count(t0)))
        return answers[-1][1] == 15

    wait_until(primary_answers, timeout=BOUND + 30, what="the primary to answer past the bound")
    stale = [at for at, count in answers if count != 15 and at > acknowledged + BOUND]
    assert not stale, f"older data than the bound served {stale[0] - acknowledged:.1f} s later"
    assert all(count in (10, 15) for _, count in answers), answers
    with replica.connect() as conn:
        (on_replica,) = conn.execute(
            "SELECT count(*) FROM metric_points p JOIN metrics m ON m.id = p.metric_id"
            " WHERE m.name = %s",
            [reader.metric],
        ).fetchone()
    assert on_replica == 10, "the 15 came from the primary: the replica is still paused"
    log = stack.web.log_path
    assert '"message": "replica lagging; reading from the primary"' in log.read_text()

    replica.replay_resume()
    replica.wait_caught_up(stack.pg)
    _wait_served_by_replica(
        replica, lambda: reader.count(t0) == 15, what="the caught-up replica to answer again"
    )
    assert '"message": "replica within its lag bound"' in log.read_text()


QUERIES = [
    ("/api/metrics/{m}", {"interval": "minute", "aggregation": "avg"}),
    ("/api/metrics/{m}", {"interval": "hour", "aggregation": "max", "group_by": "host"}),
    ("/api/metrics/{m}", {"interval": "hour", "aggregation": "p90"}),
    ("/api/metrics/{m}", {"interval": "day", "aggregation": "sum", "tz": "Asia/Kolkata"}),
    ("/api/metrics", {}),
    ("/api/series", {"metric": "{m}"}),
    ("/api/tags", {"metric": "{m}"}),
    ("/api/v1/query_range", {"query": "sum by (host) (avg_over_time({m}[5m]))"}),
    ("/api/v1/query", {"query": "max({m})"}),
    ("/api/v1/series", {"match[]": "{m}"}),
    ("/api/v1/labels", {}),
    ("/api/v1/label/host/values", {}),
]


def test_every_query_answered_by_the_caught_up_replica_equals_the_primarys(replicated):
    stack, replica, writer, reader = replicated
    t0 = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=40)
    for minute in range(0, 30, 3):
        writer.write(
            [minute + i / 7 for i in range(12)], at=t0 + timedelta(minutes=minute, seconds=1)
        )
    window = {"from": t0.isoformat(), "to": _later(t0)}
    promql_window = {
        "start": str(t0.timestamp()),
        "end": str((t0 + timedelta(minutes=35)).timestamp()),
        "step": "60",
        "time": str((t0 + timedelta(minutes=31)).timestamp()),
    }
    _wait_served_by_replica(
        replica, lambda: reader.count(t0) == 120, what="the replica to serve the reader"
    )
    for path_pattern, params_pattern in QUERIES:
        path = path_pattern.format(m=reader.metric)
        params = {k: v.format(m=reader.metric) for k, v in params_pattern.items()}
        extra = window if path.startswith("/api/metrics/") else {}
        extra = promql_window if path.startswith("/api/v1/query") else extra
        # The writer's mark (its last write) is refreshed so that its reads are the primary's.
        writer.write([0.5], at=t0 + timedelta(minutes=39), tags={"host": "mark"})
        replica.wait_caught_up(stack.pg)
        primary = writer.get(path, **params, **extra)
        mark = replica.log_size()
        from_replica = reader.get(path, **params, **extra)
        assert _replica_reads(replica, mark), f"{path} {params} was not read from the replica"
        assert from_replica == primary, f"{path} {params}: replica and primary differ"


def test_a_stopped_replica_leaves_the_primary_to_answer_without_an_error(replicated):
    stack, replica, writer, reader = replicated
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)
    writer.write([1.0] * 10, at=t0)
    replica.wait_caught_up(stack.pg)
    _wait_served_by_replica(
        replica, lambda: reader.count(t0) == 10, what="the replica to serve the reader"
    )
    replica.stop("immediate")
    writer.write([2.0] * 5, at=t0 + timedelta(minutes=1))
    stopped = time.monotonic()
    # Every read, from its first after the stop (on a connection the replica dropped) through
    # the rechecks, is the primary's answer: no error (Client.get asserts 200).
    while time.monotonic() < stopped + 8:
        assert reader.count(t0) == 15
        assert reader.promql_count(t0 + timedelta(minutes=5)) == 15
        assert reader.get("/api/series", metric=reader.metric)["results"]
    replica.start()
    replica.wait_caught_up(stack.pg)
    _wait_served_by_replica(
        replica,
        lambda: reader.count(t0) == 15,
        what="the restarted replica to serve the reader again",
    )


def test_migrate_never_connects_to_the_replica(pg_template, tmp_path):
    """`manage.py migrate`, backwards and forwards, with DATABASE_REPLICA_URL naming a server
    that records every connection: none comes."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.2)
    connections: list[tuple] = []
    done = threading.Event()

    def accept() -> None:
        while not done.is_set():
            try:
                conn, address = listener.accept()
            except TimeoutError:
                continue
            connections.append(address)
            conn.close()

    threading.Thread(target=accept, daemon=True).start()
    pg = pg_template.copy()
    try:
        pg.start()
        env = stack_env(
            pg,
            RedisServer(tmp_path, port=1),
            DATABASE_REPLICA_URL=f"postgresql://postgres@127.0.0.1:{listener.getsockname()[1]}/gf",
        )
        # Backwards and forwards, in one process.
        script = "call_command('migrate', 'apikeys', '0002'); call_command('migrate')"
        result = subprocess.run(  # noqa: S603 - our own interpreter and manage.py
            [sys.executable, str(ROOT / "manage.py"), "shell", "-c",
             f"from django.core.management import call_command; {script}"],
            env=env, cwd=ROOT, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        with psycopg.connect(pg.url()) as conn:
            assert conn.execute(
                "SELECT count(*) FROM django_migrations WHERE app = 'apikeys'"
            ).fetchone() == (3,)
    finally:
        done.set()
        pg.destroy()
        listener.close()
    assert not connections, "migrate connected to the replica"
