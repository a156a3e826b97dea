"""A real `manage.py statsd` process fed by the real `statsd` and `datadog` client libraries.

Each test starts the server on the test database and a free UDP port, sends, and reads back
through the query API. Flushes fall on whole multiples of STATSD_FLUSH_SECONDS, so a test that
must land in one flush starts sending just after a boundary (`in_one_interval`).
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time

import datadog
import pytest
import statsd
import statsd.client.base
from django.utils import timezone

from glowing_fiesta.env import env_host_port
from metrics.models import Metric, MetricPoint, Series
from metrics.services import PointInput, points_ingest
from tests.helpers import django_setup_run

from .statsd_server import ROOT, free_udp_port

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.statsd]


def total(client, name: str, aggregation: str, **params: str) -> float:
    """The aggregation over the last day, folded over the day buckets it spans."""
    response = client.get(
        f"/api/metrics/{name}", {"interval": "day", "aggregation": aggregation, **params}
    )
    assert response.status_code == 200, response.content
    values = [b["value"] for b in response.json()["buckets"] if b["value"] is not None]
    assert values, response.json()
    if aggregation in ("sum", "count"):
        return sum(values)
    return {"max": max, "min": min}[aggregation](values)


class KeptDraws:
    """A seeded stand-in for the clients' random(): sampling stays random but is counted."""

    def __init__(self, seed: int, rate: float) -> None:
        self.rng = random.Random(seed)
        self.rate = rate
        self.kept = 0

    def random(self) -> float:
        draw = self.rng.random()
        self.kept += draw <= self.rate
        return draw

    __call__ = random


def test_statsd_and_dogstatsd_clients_are_stored_exactly_after_one_flush(
    start_statsd, make_api_client, monkeypatch
):
    server = start_statsd()
    client = make_api_client(scopes=["read"])
    pystatsd = statsd.StatsClient("127.0.0.1", server.port)
    dog = datadog.DogStatsd(host="127.0.0.1", port=server.port, disable_telemetry=True)
    pystatsd_draws = KeptDraws(seed=16, rate=0.5)
    dog_draws = KeptDraws(seed=61, rate=0.25)
    monkeypatch.setattr(statsd.client.base, "random", pystatsd_draws)
    monkeypatch.setattr(datadog.dogstatsd.base, "random", dog_draws)

    before = server.in_one_interval()
    for _ in range(5):
        pystatsd.incr("app.requests", 3)
    for _ in range(200):
        pystatsd.incr("app.sampled", 1, rate=0.5)
    pystatsd.decr("app.requests")
    pystatsd.gauge("app.queue", 40)
    pystatsd.gauge("app.queue", 5, delta=True)
    pystatsd.gauge("app.queue", -12, delta=True)
    pystatsd.gauge("app.floor", -7)  # the client sends 0 then -7
    for ms in (12.5, 3, 7.25, 100):
        pystatsd.timing("app.render", ms)
    for user in ("ann", "bob", "ann", "cy"):
        pystatsd.set("app.users", user)
    with pystatsd.pipeline() as pipe:  # several lines in one datagram
        pipe.incr("app.piped")
        pipe.incr("app.piped", 2)
        pipe.timing("app.piped_ms", 4)
    pystatsd.incr("app.page views/home")

    for _ in range(3):
        dog.increment("dd.hits", tags=["env:prod", "canary"])
    for _ in range(100):
        dog.increment("dd.hits", 2, tags=["env:dev"], sample_rate=0.25)
    dog.decrement("dd.hits", tags=["env:dev"])
    dog.gauge("dd.temp", 21.5, tags=["room:lab"])
    dog.gauge("dd.temp", 22.5, tags=["room:lab"])
    for value in (1, 2, 3, 10):
        dog.histogram("dd.size", value, tags=["env:prod"])
    dog.distribution("dd.latency", 0.25)
    dog.distribution("dd.latency", 0.75)
    dog.timing("dd.db", 5)
    for visitor in ("u1", "u2", "u3", "u1"):
        dog.set("dd.visitors", visitor, tags=["site:a"])
    dog.close_socket()
    pystatsd.close()

    sent = 5 + pystatsd_draws.kept + 1 + 3 + 2 + 4 + 4 + 3 + 1
    sent += 3 + dog_draws.kept + 1 + 2 + 4 + 2 + 1 + 4
    flush = server.wait_for_flush(before, lines=sent)
    assert flush["invalid_lines"] == 0
    assert flush["stored"] == flush["points"]
    assert 0 < pystatsd_draws.kept < 200 and 0 < dog_draws.kept < 100

    assert total(client, "app.requests", "sum") == 14
    assert total(client, "app.requests", "count") == 1  # pre-summed: one point per flush
    assert total(client, "app.sampled", "sum") == pystatsd_draws.kept * 2
    assert total(client, "app.queue", "max") == 33
    assert total(client, "app.queue", "count") == 1
    assert total(client, "app.floor", "min") == -7
    assert total(client, "app.render", "count") == 4
    assert total(client, "app.render", "sum") == 122.75
    assert total(client, "app.render", "max") == 100
    assert total(client, "app.render", "min") == 3
    assert total(client, "app.users", "max") == 3
    assert total(client, "app.piped", "sum") == 3
    assert total(client, "app.piped_ms", "count") == 1
    assert total(client, "app.page_views-home", "sum") == 1

    assert total(client, "dd.hits", "sum", tag="env:prod") == 3
    assert total(client, "dd.hits", "sum", tag="canary:true") == 3
    assert total(client, "dd.hits", "sum", tag="env:dev") == dog_draws.kept * 8 - 1
    assert total(client, "dd.temp", "max", tag="room:lab") == 22.5
    assert total(client, "dd.temp", "count") == 1
    assert total(client, "dd.size", "count", tag="env:prod") == 4
    assert total(client, "dd.size", "sum") == 16
    assert total(client, "dd.size", "max") == 10
    assert total(client, "dd.latency", "sum") == 1.0
    assert total(client, "dd.db", "sum") == 5
    assert total(client, "dd.visitors", "max", tag="site:a") == 3
    assert dict(Metric.objects.values_list("name", "type"))["dd.hits"] == "counter"
    assert dict(Metric.objects.values_list("name", "type"))["dd.visitors"] == "value"


def test_binary_garbage_and_a_64_kb_datagram_do_not_kill_it(start_statsd, make_api_client):
    server = start_statsd()
    client = make_api_client(scopes=["read"])
    rng = random.Random(64)
    garbage = [rng.randbytes(rng.randint(1, 4000)) for _ in range(100)]
    garbage += [b"\xff" * 65507, b"\x00" * 65507, b"\xc3(:1|c", b":|\n|:" * 10000]
    big = b"big:1|c\n" * (65507 // 8)  # 8188 lines: the largest UDP datagram over IPv4
    before = server.in_one_interval()
    server.send(*garbage, big, b"after:1|c")
    flush = server.wait_for_flush(before)
    assert flush["invalid_lines"] >= 100
    assert total(client, "big", "sum") == 65507 // 8
    assert total(client, "after", "sum") == 1
    refused = [r for r in server.records() if r.get("message") == "statsd line refused"]
    assert refused and len(refused) <= 100  # logged, and bounded
    assert server.process.poll() is None
    assert server.stop() == 0


def test_ten_thousand_series_in_one_flush_hold_the_limits_and_say_what_was_dropped(
    start_statsd, make_api_client
):
    # 9,992 names and 8 tag sets of one metric: exactly STATSD_MAX_SERIES_PER_FLUSH; then 30 more.
    server = start_statsd(flush_seconds=4, METRIC_MAX_SERIES="5")
    client = make_api_client(scopes=["read"])
    lines = [f"n.{i}:1|c" for i in range(9_992)]
    lines += [f"tagged:1|c|#shard:{i}" for i in range(8)]
    lines += [f"late.{i}:1|c" for i in range(30)]
    datagrams, chunk = [], []
    for line in lines:
        if sum(len(x) + 1 for x in chunk) + len(line) > 60_000:
            datagrams.append("\n".join(chunk).encode())
            chunk = []
        chunk.append(line)
    datagrams.append("\n".join(chunk).encode())

    before = server.in_one_interval()
    server.send(*datagrams)
    flush = server.wait_for_flush(before, lines=10_030)
    assert flush["series_dropped"] == 30
    assert flush["series_dropped_lines"] == 30
    assert flush["series_limit_points"] == 3
    assert flush["stored"] == 9_997
    assert Metric.objects.filter(name__startswith="n.").count() == 9_992
    assert not Metric.objects.filter(name__startswith="late.").exists()
    assert Series.objects.filter(metric__name="tagged").count() == 5
    assert total(client, "tagged", "sum") == 5
    messages = [r["message"] for r in server.records()]
    assert (
        "statsd flush dropped 30 lines of 30 new series past STATSD_MAX_SERIES_PER_FLUSH=10000"
        in messages
    )
    assert any("metric tagged has its limit of 5 tag sets" in m for m in messages)


def test_a_counter_whose_name_is_a_value_metric_is_dropped_and_the_others_stored(
    start_statsd, make_api_client
):
    points_ingest(points=[PointInput("value", "shop.checkout", 5.0, timezone.now())])
    server = start_statsd()
    client = make_api_client(scopes=["read"])
    pystatsd = statsd.StatsClient("127.0.0.1", server.port)
    before = server.in_one_interval()
    pystatsd.incr("shop.checkout")
    pystatsd.incr("shop.orders", 4)
    flush = server.wait_for_flush(before, lines=2)
    assert flush["type_conflict_names"] == 1
    assert flush["stored"] == 1
    assert total(client, "shop.orders", "sum") == 4
    assert Metric.objects.get(name="shop.checkout").type == "value"
    assert list(MetricPoint.objects.filter(metric__name="shop.checkout").values_list("value")) == [
        (5.0,)
    ]
    assert any(
        "conflicts with the stored metric: shop.checkout" in r["message"] for r in server.records()
    )


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_writes_the_pending_flush_before_exit(start_statsd, make_api_client, signum):
    server = start_statsd(flush_seconds=3600)
    client = make_api_client(scopes=["read"])
    dog = datadog.DogStatsd(host="127.0.0.1", port=server.port, disable_telemetry=True)
    for _ in range(50):
        dog.increment("pending.hits", tags=["env:prod"])
    dog.gauge("pending.level", 7)
    dog.close_socket()
    started = time.monotonic()
    assert server.stop(signum) == 0
    assert time.monotonic() - started < 30
    (final,) = server.flushes()
    assert final["final"] is True
    assert final["lines"] == 51
    assert total(client, "pending.hits", "sum", tag="env:prod") == 50
    assert total(client, "pending.level", "max") == 7


def test_an_unreachable_database_keeps_the_points_for_the_next_flush(start_statsd):
    # The server starts on a database that does not answer: every flush keeps its points
    # (bounded by STATSD_MAX_SAMPLES_PER_FLUSH), and the server stays up.
    server = start_statsd(
        flush_seconds=1,
        DATABASE_URL=f"postgresql://postgres@127.0.0.1:{free_udp_port()}/nothing",
        STATSD_MAX_SAMPLES_PER_FLUSH="3",
    )
    server.send(b"t:1|ms\nt:2|ms\nt:3|ms")
    first = server.wait_for_flush(0)
    assert first["kept_for_next_flush"] == 3
    assert first["lost"] == 0
    server.send(b"t:4|ms\nt:5|ms")
    second = server.wait_for_flush(len(server.flushes()))
    assert second["kept_for_next_flush"] == 3
    assert second["lost"] == 2
    assert server.process.poll() is None
    assert server.stop() == 0


# --- settings -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "parsed"),
    [
        ("127.0.0.1:8125", ("127.0.0.1", 8125)),
        ("0.0.0.0:1", ("0.0.0.0", 1)),  # noqa: S104 - a value being parsed, not a bind
        ("[::1]:65535", ("::1", 65535)),
        ("statsd.internal:8125", ("statsd.internal", 8125)),
    ],
)
def test_statsd_bind_takes_host_and_port(raw, parsed):
    assert env_host_port(raw) == parsed


def statsd_command_run(**env: str) -> subprocess.CompletedProcess:
    """`manage.py statsd` with DEBUG on and `env` set, run to its end, output captured (for the
    settings that stop it at start-up)."""
    return subprocess.run(  # noqa: S603 - our own interpreter and manage.py
        [sys.executable, str(ROOT / "manage.py"), "statsd"],
        env={**os.environ, "DJANGO_DEBUG": "true", **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    "raw",
    [
        "8125",
        ":8125",
        "localhost",
        "localhost:0",
        "localhost:65536",
        "::1:8125",
        "[nope]:1",
        "a b:1",
    ],
)
def test_a_bad_statsd_bind_stops_start_up_with_one_line(raw):
    result = statsd_command_run(STATSD_BIND=raw)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "STATSD_BIND" in lines[0]


def test_a_port_already_taken_is_a_clear_error():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        result = statsd_command_run(STATSD_BIND=f"127.0.0.1:{port}")
    assert result.returncode == 1
    assert f"cannot listen on STATSD_BIND=127.0.0.1:{port}" in result.stderr
    assert "Address already in use" in result.stderr


def test_a_flush_interval_below_one_second_stops_start_up():
    result = django_setup_run({**os.environ, "DJANGO_DEBUG": "true", "STATSD_FLUSH_SECONDS": "0"})
    assert result.returncode != 0
    assert "STATSD_FLUSH_SECONDS" in result.stderr
