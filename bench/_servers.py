"""The service's processes a benchmark starts: gunicorn with the deployed configuration, and a
Celery worker on a queue of the run's own."""

from __future__ import annotations

import contextlib
import http.client
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

from bench._common import ROOT, log
from glowing_fiesta.devstack import free_port, wait_or_kill

GUNICORN_CONF = ROOT / "deploy" / "gunicorn.conf.py"
WORKER_START_SECONDS = 60


@contextlib.contextmanager
def gunicorn(
    env: Mapping[str, str],
    *,
    workers: int,
    threads: int = 1,
    app: str = "glowing_fiesta.wsgi:application",
) -> Iterator[tuple[str, int]]:
    """Serve `app` with deploy/gunicorn.conf.py on a free loopback port; yield (host, port).

    Worker count, threads and bind are the only overrides, so the figures are those of the
    deployed configuration. The service's stdout (one JSON line per request) is discarded;
    stderr goes to a temporary file that is shown if start-up fails.
    """
    port = free_port()
    command = [
        sys.executable, "-m", "gunicorn", "-c", str(GUNICORN_CONF),
        "--bind", f"127.0.0.1:{port}",
        "--workers", str(workers),
        "--threads", str(threads),
        app,
    ]  # fmt: skip
    with tempfile.TemporaryFile("w+") as errors:
        process = subprocess.Popen(
            command, env=dict(env), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=errors
        )
        try:
            _wait_healthy("127.0.0.1", port, process, errors)
            yield "127.0.0.1", port
        finally:
            process.terminate()
            wait_or_kill(process, 30)


def _wait_healthy(host: str, port: int, process: subprocess.Popen, errors) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            conn = http.client.HTTPConnection(host, port, timeout=2)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                conn.close()
                return
        except OSError:
            time.sleep(0.1)
    errors.seek(0)
    raise SystemExit(f"bench: gunicorn did not become healthy:\n{errors.read()[-4000:]}")


@contextlib.contextmanager
def celery_worker(env: Mapping[str, str], *, concurrency: int, queue: str) -> Iterator[None]:
    """A `celery worker` with `concurrency` prefork processes on `queue`, until the block ends."""
    command = [
        sys.executable, "-m", "celery", "-A", "glowing_fiesta", "worker",
        "--pool", "prefork", "--concurrency", str(concurrency), "-Q", queue,
        "-n", f"{queue}@%h", "--without-gossip", "--without-mingle", "--without-heartbeat",
        "--loglevel", "INFO",
    ]  # fmt: skip
    with tempfile.NamedTemporaryFile("w+", suffix=".log") as worker_log:
        process = subprocess.Popen(
            command, env=dict(env), cwd=ROOT, stdout=worker_log, stderr=subprocess.STDOUT
        )
        try:
            deadline = time.monotonic() + WORKER_START_SECONDS
            while " ready." not in Path(worker_log.name).read_text(errors="replace"):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(
                        "bench: the worker did not start:\n"
                        + Path(worker_log.name).read_text()[-4000:]
                    )
                time.sleep(0.1)
            yield
        except BaseException:
            log(f"worker log (end):\n{Path(worker_log.name).read_text()[-6000:]}")
            raise
        finally:
            process.terminate()  # warm shutdown: finishes the task in hand
            wait_or_kill(process, 60)
