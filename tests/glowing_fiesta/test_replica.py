"""Which server a read goes to (glowing_fiesta/db/replica.py), in-process.

The replica alias is pointed at servers that must not be read from: the test database itself
(a primary: not in recovery) and a port where nothing listens. A real streaming replica is in
tests/reliability/test_replica.py.
"""

from __future__ import annotations

import contextlib
import os
import socket
import warnings
from collections.abc import Iterator

import pytest
from django.conf import settings
from django.core.cache import caches
from django.db import connections
from django.db.utils import load_backend
from django.test import override_settings
from django.utils import timezone

from glowing_fiesta.db import replica
from metrics import discovery
from tests.helpers import django_setup_run

pytestmark = pytest.mark.django_db


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _replica_alias(**overrides: object) -> Iterator[None]:
    """A `replica` alias for this test: the default's settings with `overrides`."""
    entry = {**connections.settings["default"], **overrides}
    entry["OPTIONS"] = {**entry["OPTIONS"], "connect_timeout": 2}
    # The connection is made here rather than from settings: the test runner allows the
    # databases it set up, and this one is not among them.
    wrapper = load_backend(entry["ENGINE"]).DatabaseWrapper(entry, replica.REPLICA)
    with warnings.catch_warnings():
        # Django warns that other parts may not see the change: only replica.configured() looks.
        warnings.filterwarnings("ignore", "Overriding setting DATABASES")
        overridden = override_settings(DATABASES={**settings.DATABASES, replica.REPLICA: entry})
        overridden.enable()
    try:
        connections[replica.REPLICA] = wrapper
        replica.reset()
        yield
    finally:
        wrapper.close()
        del connections[replica.REPLICA]
        overridden.disable()
        replica.reset()


def _reasons(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [getattr(record, "reason", "") for record in caplog.records]


def test_without_a_replica_every_read_is_the_primarys():
    assert not replica.configured()
    assert replica.choose() == replica.PRIMARY
    assert replica.replica_read(replica.read_alias) == replica.PRIMARY
    assert replica.replica_lag() is None


def test_the_router_sends_writes_and_migrations_to_the_primary_only():
    router = replica.ReplicaRouter()
    assert router.db_for_write(object) == replica.PRIMARY
    assert router.allow_migrate(replica.PRIMARY, "metrics")
    assert not router.allow_migrate(replica.REPLICA, "metrics")
    with replica._reading(replica.REPLICA):
        assert router.db_for_read(object) == replica.REPLICA
        assert router.db_for_write(object) == replica.PRIMARY
    assert router.db_for_read(object) == replica.PRIMARY


def test_a_server_that_is_not_in_recovery_is_never_read_as_a_replica(caplog):
    with _replica_alias():
        assert replica.choose() == replica.PRIMARY
        assert replica.replica_read(replica.read_alias) == replica.PRIMARY
    assert any("not in recovery" in reason for reason in _reasons(caplog))


def test_an_unreachable_replica_leaves_the_primary_to_answer(api_client, caplog):
    api_client.post("/api/metrics/value", {"name": "rr.cpu", "value": 3}, format="json")
    with _replica_alias(PORT=_closed_port()):
        response = api_client.get("/api/metrics", {"prefix": "rr."})
        assert response.status_code == 200
        assert [m["name"] for m in response.json()["results"]] == ["rr.cpu"]
        # Left alone for a while: the next read does not try again.
        assert replica.replica_lag() is None
    assert any("unreachable" in reason for reason in _reasons(caplog))


def test_a_replica_failing_during_a_read_is_replaced_by_the_primary(api_client, caplog):
    """The last measurement said the replica was current; the read finds it gone."""
    api_client.post("/api/metrics/value", {"name": "rr.mem", "value": 3}, format="json")
    with _replica_alias(PORT=_closed_port()):
        replica._lag.lag = 0.0
        replica._lag.measured_at = replica.time.monotonic()
        assert replica.choose() == replica.REPLICA
        page = discovery.metrics_list(prefix="rr.")
        assert [m.name for m in page.results] == ["rr.mem"]
        assert replica.choose() == replica.PRIMARY
    assert any("failed during a read" in reason for reason in _reasons(caplog))


def test_a_write_marks_its_key_for_the_bound_and_its_reads_go_to_the_primary(make_api_client):
    writer, reader = make_api_client(), make_api_client()
    with _replica_alias(PORT=_closed_port()):
        response = writer.post("/api/metrics/value", {"name": "rr.disk", "value": 1}, format="json")
        assert response.status_code == 201
        cache = caches["default"]
        mark = replica._mark_key(writer.api_key.pk)
        assert cache.get(mark) == 1
        assert settings.REPLICA_MAX_LAG_SECONDS < cache.ttl(mark) <= replica.mark_ttl()
        assert cache.get(replica._mark_key(reader.api_key.pk)) is None
        # A measurement saying the replica is current: the reader may use it, the writer not.
        replica._lag.lag = 0.0
        replica._lag.measured_at = replica.time.monotonic()
        replica.request_key_set(writer.api_key.pk)
        assert replica.choose() == replica.PRIMARY
        replica.request_key_set(reader.api_key.pk)
        assert replica.choose() == replica.REPLICA
        # A read request leaves no key behind it.
        assert reader.get("/api/keys/me").status_code == 200
        assert replica._request_key.get() is None
        # Past the bound the lag alone sends every read to the primary.
        replica._lag.lag = float(settings.REPLICA_MAX_LAG_SECONDS)
        replica._lag.measured_at = replica.time.monotonic() - 0.5
        assert replica.choose() == replica.PRIMARY
        replica.request_key_set(None)


def test_a_write_that_fails_marks_nothing(make_api_client):
    writer = make_api_client()
    with _replica_alias(PORT=_closed_port()):
        response = writer.post("/api/metrics/value", {"name": "rr bad", "value": 1}, format="json")
        assert response.status_code == 400
        assert caches["default"].get(replica._mark_key(writer.api_key.pk)) is None


def test_an_async_batch_marks_its_key_when_a_worker_writes_it(make_api_client):
    from metrics.batches.process import outbox_process

    writer = make_api_client()
    with _replica_alias(PORT=_closed_port()):
        response = writer.post(
            "/api/metrics/batch",
            {"points": [{"name": "rr.async", "type": "value", "value": 1}]},
            format="json",
            HTTP_PREFER="respond-async",
        )
        assert response.status_code == 202
        caches["default"].delete(replica._mark_key(writer.api_key.pk))
        batch_id = response.json()["batch_id"]
        assert outbox_process(batch_id=batch_id, now=timezone.now()).result == "done"
        assert caches["default"].get(replica._mark_key(writer.api_key.pk)) == 1


@pytest.mark.parametrize(
    ("value", "starts"), [("0", False), ("1", True), ("3600", True), ("3601", False)]
)
def test_replica_max_lag_seconds_is_from_1_to_3600(value, starts):
    result = django_setup_run(
        {**os.environ, "DJANGO_DEBUG": "true", "REPLICA_MAX_LAG_SECONDS": value}
    )
    assert (result.returncode == 0) == starts, result.stderr
    if not starts:
        assert "REPLICA_MAX_LAG_SECONDS" in result.stderr
