"""The connection health check reads the socket instead of asking the server (glowing_fiesta/db)."""

from __future__ import annotations

import json
import time

import psycopg
import pytest
from django.db import connections

from tests.processes import worker_database_url

pytestmark = pytest.mark.django_db(transaction=True)


def _terminate(pid: int) -> None:
    with psycopg.connect(worker_database_url(), autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [pid])


def _last_query(pid: int) -> str:
    with psycopg.connect(worker_database_url(), autocommit=True) as admin:
        return admin.execute("SELECT query FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone()[
            0
        ]


@pytest.fixture
def own_connection():
    connection = connections.create_connection("default")
    connection.ensure_connection()
    yield connection
    connection.close()


def test_a_live_connection_is_usable_without_a_query(own_connection):
    with own_connection.cursor() as cursor:
        cursor.execute("SELECT 'the last query' AS marker")
    pid = own_connection.connection.info.backend_pid
    assert own_connection.is_usable()
    assert _last_query(pid) == "SELECT 'the last query' AS marker"


def test_a_connection_the_server_closed_is_not_usable(own_connection):
    _terminate(own_connection.connection.info.backend_pid)
    deadline = time.monotonic() + 5
    while own_connection.is_usable() and time.monotonic() < deadline:
        time.sleep(0.01)  # the server's goodbye takes a moment to arrive
    assert not own_connection.is_usable()


def test_a_closed_connection_is_not_usable(own_connection):
    own_connection.connection.close()
    assert not own_connection.is_usable()


@pytest.mark.server
def test_a_request_after_the_server_dropped_the_connection_is_served(start_gunicorn, api_key):
    """The check runs before each request's first query: a worker whose connection was
    terminated reconnects instead of answering 503."""
    server = start_gunicorn()
    _, raw = api_key
    headers = {"X-API-Key": raw, "Content-Type": "application/json", "X-Forwarded-Proto": "https"}
    body = json.dumps({"name": "db.health", "value": 1}).encode()
    response, _ = server.request("POST", "/api/metrics/counter", body, headers)
    assert response.status == 201
    with psycopg.connect(worker_database_url(), autocommit=True) as admin:
        pids = [
            row[0]
            for row in admin.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                " AND application_name = 'glowing-fiesta-web'"
            )
        ]
    assert pids  # the workers' persistent connections
    for pid in pids:
        _terminate(pid)
    time.sleep(0.2)
    for _ in range(4):
        response, text = server.request("POST", "/api/metrics/counter", body, headers)
        assert response.status == 201, text
