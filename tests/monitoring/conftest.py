"""Real processes for self-monitoring tests: gunicorn, a Celery worker, and a /metrics scraper.

Every service started here shares one PROMETHEUS_MULTIPROC_DIR of the test's own, so /metrics
sums exactly the processes of that test, and a Celery queue of its own.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from django.conf import settings
from prometheus_client.parser import text_string_to_metric_families

from apikeys.services import apikey_create
from glowing_fiesta.devstack import free_port
from tests.helpers import truncate_point_tables, wait_for
from tests.processes import worker_database_url

ROOT = Path(__file__).resolve().parents[2]
START_SECONDS = 60


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
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


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

        wait_for(healthy, timeout=START_SECONDS, what="gunicorn to serve")
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

        wait_for(ready, timeout=START_SECONDS, what="the worker to start")
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
    """One sample's value; 0 when absent (a counter never incremented is not exported)."""
    return parsed.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def stack(transactional_db, tmp_path: Path) -> Iterator[Stack]:
    truncate_point_tables()
    multiproc_dir = tmp_path / "prometheus"
    multiproc_dir.mkdir()
    queue = f"gf-test-{uuid.uuid4().hex[:12]}"
    env = dict(os.environ)
    env.update(
        DATABASE_URL=worker_database_url(),
        REDIS_URL=settings.REDIS_URL,
        CELERY_BROKER_URL=settings.CELERY_BROKER_URL,
        CELERY_QUEUE=queue,
        DJANGO_DEBUG="true",
        DJANGO_SETTINGS_MODULE="glowing_fiesta.settings",
        PROMETHEUS_MULTIPROC_DIR=str(multiproc_dir),
        SELF_METRICS="false",
    )
    env.pop("PROCESS_ROLE", None)
    _, read_key = apikey_create(name="scraper", scopes=["read"], rate_limit=100_000)
    _, write_key = apikey_create(name="writer", scopes=["read", "write"], rate_limit=100_000)
    started = Stack(env, multiproc_dir, queue, tmp_path, read_key, write_key, [])
    yield started
    started.stop_all()
    redis.Redis.from_url(settings.CELERY_BROKER_URL).delete(queue)
    truncate_point_tables()
