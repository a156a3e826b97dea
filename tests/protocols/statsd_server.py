"""A real `manage.py statsd` process on the test database, for the tests that feed it."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
START_SECONDS = 60
FLUSH_WAIT_SECONDS = 60


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    process: subprocess.Popen
    log_path: Path
    port: int
    flush_seconds: int

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def records(self) -> list[dict]:
        out = []
        for line in self.log().splitlines():
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
        return out

    def flushes(self) -> list[dict]:
        return [r for r in self.records() if r.get("message") == "statsd flush"]

    def wait_for(self, predicate: Callable[[], object], what: str, timeout: float) -> object:
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if self.process.poll() is not None:
                pytest.fail(f"statsd exited with {self.process.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                pytest.fail(f"timed out after {timeout} s waiting for {what}:\n{self.log()}")
            time.sleep(0.05)

    def wait_for_flush(self, after: int, *, lines: int | None = None) -> dict:
        """The first flush logged after the `after` first ones that received anything."""

        def found() -> dict | None:
            busy = [f for f in self.flushes()[after:] if f["lines"]]
            return busy[0] if busy else None

        flush = self.wait_for(found, "a flush", FLUSH_WAIT_SECONDS)
        if lines is not None:
            assert flush["lines"] == lines, flush
        return flush

    def send(self, *datagrams: bytes) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for data in datagrams:
                sock.sendto(data, ("127.0.0.1", self.port))

    def in_one_interval(self) -> int:
        """Sleep to just after a flush boundary; return how many flushes were logged by then."""
        phase = time.time() % self.flush_seconds
        time.sleep(self.flush_seconds - phase + 0.5)
        return len(self.flushes())

    def stop(self, signum: int = signal.SIGTERM) -> int:
        self.process.send_signal(signum)
        return self.process.wait(START_SECONDS)
