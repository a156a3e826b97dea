"""The deployed stack on this machine, for the load and soak tests: gunicorn with
deploy/gunicorn.conf.py, a `celery worker` (prefork, 2 processes) and `celery beat` on a queue of
their own, against a database of their own created next to DATABASE_URL's and the Redis of
REDIS_URL, with an API key of a rate limit of 10,000,000 a minute."""

from __future__ import annotations

import contextlib
import http.client
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from bench import _common, _servers
from glowing_fiesta.devstack import free_port

ROOT = _common.ROOT
START_SECONDS = 60


def log(message: str) -> None:
    print(f"[loadtest] {message}", file=sys.stderr, flush=True)


@dataclass
class Stack:
    """gunicorn, a Celery worker and beat on a database of their own; what locust is pointed at."""

    env: dict[str, str]
    database_url: str
    base_url: str
    api_key: str
    workdir: Path
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    def check_alive(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise SystemExit(
                    f"loadtest: {name} exited with {process.returncode}:\n"
                    + _tail(self.workdir / f"{name}.log")
                )

    def logs(self) -> str:
        return "\n".join(
            f"--- {name} ---\n{_tail(self.workdir / f'{name}.log')}" for name in self.processes
        )


def _tail(path: Path, lines: int = 30) -> str:
    if not path.exists():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _start(stack: Stack, name: str, command: list[str], *, stdout_to_log: bool = True) -> None:
    log_file = (stack.workdir / f"{name}.log").open("w")
    # The web service logs every request on stdout (a JSON line); only its stderr is kept.
    stdout = log_file if stdout_to_log else subprocess.DEVNULL
    stack.processes[name] = subprocess.Popen(
        command, env=stack.env, cwd=ROOT, stdout=stdout, stderr=log_file, start_new_session=True
    )


def _stop(processes: Sequence[subprocess.Popen]) -> None:
    """A graceful stop (SIGTERM: gunicorn and Celery finish the request or task in hand), all
    at once; what is still running after 30 s is killed with its children."""
    for process in processes:
        if process.poll() is None:
            process.terminate()
    deadline = time.monotonic() + 30
    for process in processes:
        try:
            process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, 9)
            process.wait()


def _wait_for(predicate, what: str, stack: Stack) -> None:
    deadline = time.monotonic() + START_SECONDS
    while not predicate():
        stack.check_alive()
        if time.monotonic() > deadline:
            raise SystemExit(f"loadtest: timed out waiting for {what}\n{stack.logs()}")
        time.sleep(0.1)


def _healthy(base_url: str) -> bool:
    parts = urlsplit(base_url)
    try:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=2)
        conn.request("GET", "/healthz")
        return conn.getresponse().status == 200
    except OSError:
        return False


@contextlib.contextmanager
def running_stack(name: str, *, gunicorn_args: Sequence[str] = ()) -> Iterator[Stack]:
    """Start the stack on a fresh database `gf_<name>_<id>`; stop it and drop the database after."""
    database_url = _common.required_env("DATABASE_URL")
    redis_url = _common.required_env("REDIS_URL")
    run_id = uuid.uuid4().hex[:8]
    workdir = Path(tempfile.mkdtemp(prefix=f"gf-{name}-"))
    prometheus = workdir / "prometheus"
    prometheus.mkdir()
    env = _common.service_env(
        database_url,
        redis_url,
        CELERY_QUEUE=f"gf-{name}-{run_id}",
        PROMETHEUS_MULTIPROC_DIR=str(prometheus),
        PYTHONUNBUFFERED="1",
    )
    try:
        with _common.scratch_database(database_url, f"gf_{name}_{run_id}", env) as scratch_url:
            env["DATABASE_URL"] = scratch_url
            port = free_port()
            stack = Stack(env, scratch_url, f"http://127.0.0.1:{port}", "", workdir)
            queue = env["CELERY_QUEUE"]
            celery = [sys.executable, "-m", "celery", "-A", "glowing_fiesta"]
            try:
                _start(
                    stack,
                    "gunicorn",
                    [sys.executable, "-m", "gunicorn", "-c", str(_servers.GUNICORN_CONF),
                     "--bind", f"127.0.0.1:{port}", *gunicorn_args],
                    stdout_to_log=False,
                )  # fmt: skip
                _start(
                    stack,
                    "worker",
                    [*celery, "worker", "--pool", "prefork", "--concurrency", "2", "-Q", queue,
                     "-n", f"{queue}@%h", "--without-gossip", "--without-mingle",
                     "--without-heartbeat", "--loglevel", "INFO"],
                )  # fmt: skip
                _start(
                    stack,
                    "beat",
                    [*celery, "beat", "--loglevel", "WARNING",
                     "--schedule", str(workdir / "celerybeat-schedule")],
                )  # fmt: skip
                # While the processes boot.
                stack.api_key = _common.api_key_create(env, name=name, rate_limit=10_000_000)
                _wait_for(lambda: _healthy(stack.base_url), "gunicorn to answer /healthz", stack)
                worker_log = workdir / "worker.log"
                _wait_for(
                    lambda: " ready." in worker_log.read_text(errors="replace"),
                    "the Celery worker to be ready",
                    stack,
                )
                yield stack
            finally:
                _stop(list(stack.processes.values()))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def machine_line(database_url: str) -> str:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"machine: {_common.machine_summary(database_url)}; load average {load}"
