"""A real gunicorn (deploy/gunicorn.conf.py) on the test database, for tests over real HTTP.

It runs with the production defaults: DEBUG off, HTTPS required, secure cookies, HSTS; and with
SECURE_PROXY_SSL_HEADER=X-Forwarded-Proto, so a test says "this came over TLS" the way a
TLS-terminating proxy does.
"""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.conf import settings

from glowing_fiesta.devstack import PLAIN_HTTP, free_port, wait_or_kill
from tests.processes import worker_database_url

ROOT = Path(__file__).resolve().parents[2]
START_SECONDS = 30
HTTPS = {"X-Forwarded-Proto": "https"}


@dataclass
class Server:
    host: str
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict | None = None
    ) -> tuple[http.client.HTTPResponse, bytes]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return response, response.read()
        finally:
            conn.close()


def production_env(**extra: str) -> dict[str, str]:
    """This process's environment less the plain-HTTP relaxations of `make test`."""
    env = {k: v for k, v in os.environ.items() if k not in PLAIN_HTTP}
    env.update(DJANGO_DEBUG="false", DJANGO_SETTINGS_MODULE="glowing_fiesta.settings")
    env.update(extra)
    return env


@pytest.fixture
def start_gunicorn(
    transactional_db, clean_point_tables, tmp_path
) -> Iterator[Callable[..., Server]]:
    """`start_gunicorn(VAR="value", ...)`: gunicorn with 2 sync workers on a free loopback port
    and the test database; every one started is stopped (and waited for) at teardown, before the
    test database is flushed and the point tables emptied."""
    processes: list[subprocess.Popen] = []

    def start(**extra_env: str) -> Server:
        port = free_port()
        log_path = tmp_path / f"gunicorn-{port}.log"
        env = production_env(
            DATABASE_URL=worker_database_url(),
            REDIS_URL=settings.REDIS_URL,
            SECURE_PROXY_SSL_HEADER="X-Forwarded-Proto",
            **extra_env,
        )
        with log_path.open("w") as log_file:
            process = subprocess.Popen(  # noqa: S603 - our own interpreter and config
                [
                    sys.executable, "-m", "gunicorn",
                    "-c", str(ROOT / "deploy" / "gunicorn.conf.py"),
                    "--bind", f"127.0.0.1:{port}", "--workers", "2",
                ],
                env=env,
                cwd=ROOT,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        processes.append(process)
        server = Server("127.0.0.1", port, log_path)
        deadline = time.monotonic() + START_SECONDS
        while True:
            if process.poll() is not None:
                pytest.fail(f"gunicorn exited with {process.returncode}:\n{server.log()}")
            try:
                if server.request("GET", "/healthz")[0].status == 200:
                    return server
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"gunicorn did not answer in {START_SECONDS} s:\n{server.log()}")
            time.sleep(0.1)

    yield start
    for process in processes:
        process.terminate()
    for process in processes:
        wait_or_kill(process, 20)


@pytest.fixture
def gunicorn_server(start_gunicorn) -> Server:
    """gunicorn with the production defaults (and the proxy header), on the test database."""
    return start_gunicorn()
