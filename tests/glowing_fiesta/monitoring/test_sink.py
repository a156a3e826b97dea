"""The sink: the one interface through which the recording calls reach the own store, built
once per process by the factory an app registered."""

from __future__ import annotations

import pytest

from glowing_fiesta import monitoring
from glowing_fiesta.monitoring import sink
from selfmetrics.selfstore import store_for_process


class FakeSink:
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def count(self, name, tags, amount=1) -> None:
        self.calls.append(("count", name, tags, amount))

    def sample(self, name, tags, value) -> None:
        self.calls.append(("sample", name, tags, value))

    def request(self, tags, duration_ms) -> None:
        self.calls.append(("request", tags))

    def db_write(self, latency_ms, points) -> None:
        self.calls.append(("db_write", points))

    def stop(self) -> None:
        self.calls.append(("stop",))


@pytest.fixture
def pid(monkeypatch):
    """This process's pid as the sink sees it; set `pid.value` to play a forked child."""

    class Pid:
        value = 1000

    monkeypatch.setattr(sink.os, "getpid", lambda: Pid.value)
    for name in ("_factory", "_sink", "_sink_pid"):
        monkeypatch.setattr(sink, name, getattr(sink, name))
    return Pid


def test_the_selfmetrics_app_registers_its_store_as_the_sink():
    assert sink._factory is store_for_process


def test_without_a_registered_factory_there_is_no_sink(pid, monkeypatch):
    monkeypatch.setattr(sink, "_factory", None)
    monkeypatch.setattr(sink, "_sink_pid", None)
    assert sink.current() is None
    monitoring.auth_failure("missing")  # records to Prometheus alone, and does not fail
    sink.flush_now()


def test_each_process_builds_its_own_sink_once(pid):
    built = []

    def factory():
        built.append(FakeSink())
        return built[-1]

    sink.sink_register(factory)
    first = sink.current()
    assert sink.current() is first
    assert len(built) == 1
    pid.value = 1001  # a forked child: never its parent's sink
    child = sink.current()
    assert child is not first
    assert len(built) == 2


def test_a_factory_answering_none_is_asked_once_per_process(pid):
    asked = []

    def factory():
        asked.append(1)

    sink.sink_register(factory)
    assert sink.current() is None
    assert sink.current() is None
    assert asked == [1]


def test_the_recording_calls_reach_the_sink(pid):
    fake = FakeSink()
    sink.sink_register(lambda: fake)
    monitoring.auth_failure("revoked")
    monitoring.ingestion_failure("invalid", 3)
    monitoring.celery_task(task="retention.apply", outcome="retry")
    assert fake.calls == [
        ("count", "auth_failures", (("reason", "revoked"),), 1),
        ("count", "ingestion_failures", (("reason", "invalid"),), 3),
        ("count", "celery_tasks", (("outcome", "retry"), ("task", "retention.apply")), 1),
    ]


def test_flush_now_stops_only_this_processs_sink(pid):
    fake = FakeSink()
    sink.sink_register(lambda: fake)
    sink.current()
    pid.value = 1001  # a child that never recorded: nothing of its parent's to write
    sink.flush_now()
    assert fake.calls == []
    pid.value = 1000
    sink.flush_now()
    assert fake.calls == [("stop",)]
