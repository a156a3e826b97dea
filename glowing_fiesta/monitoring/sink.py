"""Where the recording calls hand the service's own figures besides Prometheus: one sink.

This package imports no app, yet the own figures end up in the service's own store, which the
`metrics` app writes. So the app that stores them registers a sink factory at start-up
(selfmetrics/apps.py, in `ready()`), as Sentry puts its metrics backends behind one interface:
record.py talks to `Sink` only. Without a registered factory (a bare script, the Celery app
before Django is set up) every process is sinkless and records to Prometheus alone.

Each process gets its own sink on its first figure, so that a forked child (a gunicorn worker,
a Celery pool process) never shares its parent's pending figures or flush thread.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Protocol

Tags = tuple[tuple[str, str], ...]


class Sink(Protocol):
    """What a process's own-figure store takes from record.py. Every call may come from any
    thread and must cost no more than an in-memory update: the write happens elsewhere."""

    def count(self, name: str, tags: Tags, amount: float = 1) -> None:
        """Add `amount` to the counter `name` with `tags`."""

    def sample(self, name: str, tags: Tags, value: float) -> None:
        """One observation of the value `name` with `tags`."""

    def request(self, tags: Tags, duration_ms: float) -> None:
        """One request: its count and its duration."""

    def db_write(self, latency_ms: float, points: int) -> None:
        """One write of points to PostgreSQL: its time and size."""

    def stop(self) -> None:
        """Write what is pending and stop: the process is about to exit."""


SinkFactory = Callable[[], Sink | None]

_factory: SinkFactory | None = None
_sink: Sink | None = None
_sink_pid: int | None = None
_lock = threading.Lock()


def sink_register(factory: SinkFactory) -> None:
    """Build each process's sink with `factory`, called once per process on its first figure;
    it returns None where the process keeps its figures in Prometheus only."""
    global _factory, _sink, _sink_pid
    with _lock:
        _factory, _sink, _sink_pid = factory, None, None


def current() -> Sink | None:
    """This process's sink, built on first use (after any fork); None without one."""
    global _sink, _sink_pid
    pid = os.getpid()
    if _sink_pid == pid:
        return _sink
    with _lock:
        if _factory is None:
            return None
        if _sink_pid != pid:
            # A forked child inherits its parent's sink but not its thread: build afresh.
            _sink, _sink_pid = _factory(), pid
    return _sink


def flush_now() -> None:
    """Write this process's pending figures now (a Celery pool process about to exit)."""
    if _sink is not None and _sink_pid == os.getpid():
        _sink.stop()
