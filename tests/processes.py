"""Real processes for tests: Celery workers on the test database and this test's own queue;
gunicorn servers, workers and a /metrics scraper sharing one PROMETHEUS_MULTIPROC_DIR (`stack`).

The fixtures (`queue_name`, `start_worker`, `stack`) are registered in tests/conftest.py."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlencode

import pytest
import redis
from django.conf import settings
from django.db import connection
from prometheus_client.parser import text_string_to_metric_families

from apikeys.services import apikey_create
from glowing_fiesta.celery import app as celery_app
from glowing_fiesta.devstack import free_port, wait_or_kill
from tests.helpers import truncate_point_tables, wait_for

ROOT = Path(__file__).resolve().parents[1]
WORKER_START_SECONDS = 60
SERVE_START_SECONDS = 60


def broker() -> redis.Redis:
    return redis.Redis.from_url(settings.CELERY_BROKER_URL)


def queued_batch_ids(queue_name: str) -> list[int]:
    """The batch ids of the messages waiting in a queue (Celery's JSON protocol 2 body)."""
    import base64

    ids = []
    for raw in broker().lrange(queue_name, 0, -1):
        message = json.loads(raw)
        assert message["headers"]["task"] == "metrics.ProcessMetricBatch"
        args, kwargs, _ = json.loads(base64.b64decode(message["body"]))
        assert kwargs == {}
        ids.append(args[0])
    return ids


@pytest.fixture
def queue_name() -> Iterator[str]:
    """A queue of this test's own: tasks sent by this process go there, and only there."""
    name = f"gf-test-{uuid.uuid4().hex[:12]}"
    previous = celery_app.conf.task_default_queue
    celery_app.conf.task_default_queue = name
    yield name
    celery_app.conf.task_default_queue = previous
    broker().delete(name)


def python_run(code: str, *, timeout: float = 60, **env: str) -> subprocess.CompletedProcess:
    """Run `code` in a new interpreter from the repository root, with the service's settings
    and `env` over this process's environment; its output captured as text, never raising."""
    return subprocess.run(  # noqa: S603 - our own interpreter and code
        [sys.executable, "-c", code],
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "glowing_fiesta.settings", **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def worker_database_url() -> str:
    """A DATABASE_URL for the test database, over TCP or a Unix socket (the embedded server)."""
    db = connection.settings_dict
    credentials = quote(db["USER"] or "", safe="")
    if db["PASSWORD"]:
        credentials += ":" + quote(db["PASSWORD"], safe="")
    host = db["HOST"] or ""
    query = {}
    socket_dir = db.get("OPTIONS", {}).get("host")
    if host.startswith("/"):
        host, socket_dir = "", host
    if socket_dir:
        query["host"] = socket_dir
    port = f":{db['PORT']}" if db["PORT"] else ""
    url = f"postgresql://{credentials}@{host}{port}/{quote(db['NAME'], safe='')}"
    return f"{url}?{urlencode(query)}" if query else url


def process_env(queue: str, **extra: str) -> dict[str, str]:
    """This process's environment for a service process (worker, gunicorn, beat) on the test
    database, the test Redis and Celery queue `queue`, with DEBUG on; `extra` set last."""
    return {
        **os.environ,
        "DATABASE_URL": worker_database_url(),
        "REDIS_URL": settings.REDIS_URL,
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "CELERY_QUEUE": queue,
        "DJANGO_DEBUG": "true",
        "DJANGO_SETTINGS_MODULE": "glowing_fiesta.settings",
        **extra,
    }


def healthz_wait(port: int, process: subprocess.Popen, *, timeout: float, log=lambda: "") -> None:
    """Poll GET /healthz on 127.0.0.1:`port` until it answers 200; fail, with `log()`, if
    `process` (the server) exits or `timeout` seconds pass first."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        assert process.poll() is None, f"the server exited with {process.returncode}: {log()}"
        assert time.monotonic() < deadline, f"no 200 from /healthz in {timeout} s: {log()}"
        time.sleep(0.1)


@dataclass
class Worker:
    process: subprocess.Popen
    log_path: Path
    killed: bool = field(default=False)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_records(self) -> list[dict]:
        records = []
        for line in self.log().splitlines():
            if line.startswith("{"):
                try:
                    records.append(json.loads(line))
                except ValueError:
                    continue
        return records

    def pool_children(self) -> list[int]:
        path = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        return [int(pid) for pid in path.read_text().split()] if path.exists() else []

    def kill(self) -> None:
        """SIGKILL the worker and its pool processes at once, as a crash or the OOM killer would."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)
        self.killed = True


@pytest.fixture
def start_worker(
    transactional_db, queue_name: str, clean_point_tables, tmp_path: Path
) -> Iterator[Callable[..., Worker]]:
    """Start `celery worker` processes on the test database and this test's queue.

    `start_worker(VAR="value", ...)` adds environment variables. Every worker started is killed
    at teardown, before the test database is flushed.
    """
    workers: list[Worker] = []

    def start(**extra_env: str) -> Worker:
        env = process_env(queue_name, **extra_env)
        log_path = tmp_path / f"worker-{len(workers)}.log"
        with log_path.open("w") as log_file:
            process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
                [
                    sys.executable, "-m", "celery", "-A", "glowing_fiesta", "worker",
                    "--pool", "prefork", "--concurrency", "1",
                    "-Q", queue_name, "-n", f"{queue_name}-{len(workers)}@%h",
                    "--without-gossip", "--without-mingle", "--without-heartbeat",
                    "--loglevel", "INFO",
                ],
                env=env,
                cwd=ROOT,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, so kill() reaches the pool too
            )  # fmt: skip
        worker = Worker(process, log_path)
        workers.append(worker)

        def ready() -> bool:
            if process.poll() is not None:
                pytest.fail(f"the worker exited with {process.returncode}:\n{worker.log()}")
            return " ready." in worker.log()

        wait_for(ready, timeout=WORKER_START_SECONDS, what="the worker to start", log=worker.log)
        return worker

    yield start
    for worker in workers:
        worker.kill()


# --- a stack of real services sharing one multiprocess directory ----------------------------
#
# Every service started by `stack` shares one PROMETHEUS_MULTIPROC_DIR of the test's own, so
# /metrics sums exactly the processes of that test, and a Celery queue of its own.


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self):
        return json.loads(self.body)


@dataclass
class Service:
    """A gunicorn server of the test's own."""

    process: subprocess.Popen
    port: int
    log_path: Path
    stdout_path: Path

    def request(self, method: str, path: str, body=None, **headers: str) -> Response:
        # A new connection per request, as sync workers close theirs: the arbiter's socket
        # hands each one to whichever worker accepts first.
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            payload = json.dumps(body).encode() if body is not None else None
            if payload is not None:
                headers.setdefault("Content-Type", "application/json")
            conn.request(method, path, payload, headers)
            response = conn.getresponse()
            return Response(response.status, dict(response.getheaders()), response.read())
        finally:
            conn.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            wait_or_kill(self.process, 30, after_kill=10)


@dataclass
class Stack:
    """The environment every process of one test shares, and what was started in it."""

    env: dict[str, str]
    multiproc_dir: Path
    queue: str
    tmp_path: Path
    read_key: str
    write_key: str
    processes: list

    def serve(self, *, workers: int = 2, **extra: str) -> Service:
        port = free_port()
        n = len(self.processes)
        log_path = self.tmp_path / f"gunicorn-{n}.log"
        stdout_path = self.tmp_path / f"gunicorn-{n}.out"
        with log_path.open("w") as log_file, stdout_path.open("w") as out_file:
            process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
                [
                    sys.executable, "-m", "gunicorn", "-c", str(ROOT / "deploy" / "gunicorn.conf.py"),
                    "--bind", f"127.0.0.1:{port}", "--workers", str(workers),
                    "--worker-tmp-dir", str(self.tmp_path),
                ],
                env={**self.env, **extra},
                cwd=ROOT,
                stdout=out_file,
                stderr=log_file,
                start_new_session=True,
            )  # fmt: skip
        service = Service(process, port, log_path, stdout_path)
        self.processes.append(service)

        def healthy() -> bool:
            if process.poll() is not None:
                pytest.fail(f"gunicorn exited with {process.returncode}:\n{service.log()}")
            with contextlib.suppress(OSError):
                return service.request("GET", "/healthz").status == 200
            return False

        wait_for(healthy, timeout=SERVE_START_SECONDS, what="gunicorn to serve")
        return service

    def start_worker(self, **extra: str) -> subprocess.Popen:
        n = len(self.processes)
        log_path = self.tmp_path / f"worker-{n}.log"
        with log_path.open("w") as log_file:
            process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
                [
                    sys.executable, "-m", "celery", "-A", "glowing_fiesta", "worker",
                    "--pool", "prefork", "--concurrency", "2", "-Q", self.queue,
                    "-n", f"{self.queue}-{n}@%h",
                    "--without-gossip", "--without-mingle", "--without-heartbeat",
                    "--loglevel", "INFO",
                ],
                env={**self.env, **extra},
                cwd=ROOT,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        self.processes.append(process)

        def ready() -> bool:
            if process.poll() is not None:
                pytest.fail(f"the worker exited:\n{log_path.read_text()}")
            return " ready." in log_path.read_text(errors="replace")

        wait_for(ready, timeout=WORKER_START_SECONDS, what="the worker to start")
        return process

    def manage(self, *args: str, **extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(  # noqa: S603
            [sys.executable, str(ROOT / "manage.py"), *args],
            env={**self.env, **extra},
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def stop_all(self) -> None:
        for process in reversed(self.processes):
            if isinstance(process, Service):
                process.stop()
            elif process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)


def scrape_text(service: Service, key: str) -> str:
    response = service.request("GET", "/metrics", Authorization=f"Bearer {key}")
    assert response.status == 200, response.body[:500]
    assert response.headers["Content-Type"].startswith("text/plain")
    return response.body.decode()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value}, parsed by prometheus_client's own parser."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(parsed: dict, name: str, **labels: str) -> float:
    """One sample's value; 0 when absent (a series whose label values are not known in advance
    appears only with its first event)."""
    return parsed.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def stack(transactional_db, tmp_path: Path) -> Iterator[Stack]:
    truncate_point_tables()
    multiproc_dir = tmp_path / "prometheus"
    multiproc_dir.mkdir()
    queue = f"gf-test-{uuid.uuid4().hex[:12]}"
    env = process_env(queue, PROMETHEUS_MULTIPROC_DIR=str(multiproc_dir), SELF_METRICS="false")
    env.pop("PROCESS_ROLE", None)
    _, read_key = apikey_create(name="scraper", scopes=["read"], rate_limit=100_000)
    _, write_key = apikey_create(name="writer", scopes=["read", "write"], rate_limit=100_000)
    started = Stack(env, multiproc_dir, queue, tmp_path, read_key, write_key, [])
    yield started
    started.stop_all()
    redis.Redis.from_url(settings.CELERY_BROKER_URL).delete(queue)
    truncate_point_tables()
