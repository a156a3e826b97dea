"""Real processes for tests: Celery workers on the test database and this test's own queue.

The fixtures (`queue_name`, `start_worker`) are registered in tests/conftest.py."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlencode

import pytest
import redis
from django.conf import settings
from django.db import connection

from glowing_fiesta.celery import app as celery_app
from tests.helpers import wait_for

ROOT = Path(__file__).resolve().parents[1]
WORKER_START_SECONDS = 60


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
        env = dict(os.environ)
        env.update(
            DATABASE_URL=worker_database_url(),
            REDIS_URL=settings.REDIS_URL,
            CELERY_BROKER_URL=settings.CELERY_BROKER_URL,
            CELERY_QUEUE=queue_name,
            DJANGO_DEBUG="true",
            DJANGO_SETTINGS_MODULE="glowing_fiesta.settings",
        )
        env.update(extra_env)
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
