"""What the protocol tests share: a key to write with, and a real `manage.py statsd` process."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.conf import settings

from apikeys.services import apikey_create
from tests.processes import worker_database_url

from .statsd_server import ROOT, START_SECONDS, Server, free_udp_port


@pytest.fixture
def raw_key(db) -> str:
    """A raw key with both scopes and a rate limit no test reaches."""
    return apikey_create(name="protocols", scopes=["read", "write"], rate_limit=1_000_000)[1]


@pytest.fixture
def start_statsd(
    transactional_db, clean_point_tables, tmp_path: Path
) -> Iterator[Callable[..., Server]]:
    """Start `manage.py statsd` on the test database; killed at teardown if still running."""
    servers: list[Server] = []

    def start(flush_seconds: int = 3, **extra_env: str) -> Server:
        port = free_udp_port()
        env = dict(os.environ)
        env.update(
            DATABASE_URL=worker_database_url(),
            REDIS_URL=settings.REDIS_URL,
            DJANGO_DEBUG="true",
            DJANGO_SETTINGS_MODULE="glowing_fiesta.settings",
            STATSD_BIND=f"127.0.0.1:{port}",
            STATSD_FLUSH_SECONDS=str(flush_seconds),
        )
        env.update(extra_env)
        log_path = tmp_path / f"statsd-{len(servers)}.log"
        with log_path.open("w") as log_file:
            process = subprocess.Popen(  # noqa: S603 - our own interpreter and manage.py
                [sys.executable, str(ROOT / "manage.py"), "statsd"],
                env=env,
                cwd=ROOT,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        server = Server(process, log_path, port, flush_seconds)
        servers.append(server)
        server.wait_for(lambda: "statsd listening" in server.log(), "start-up", START_SECONDS)
        return server

    yield start
    for server in servers:
        if server.process.poll() is None:
            server.process.kill()
        server.process.wait(10)
