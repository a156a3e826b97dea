"""Helpers shared by every test folder: requests, problem checks, points, polling."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import time
import zoneinfo
from collections.abc import Callable
from pathlib import Path

import pytest
from django.db import connection

from glowing_fiesta.exceptions import PROBLEM_CONTENT_TYPE, TYPE_PREFIX
from metrics import points, selectors
from metrics.services import PointInput, points_ingest

PROBLEM = PROBLEM_CONTENT_TYPE
ROOT = Path(__file__).resolve().parents[1]
GUNICORN_CONF = ROOT / "deploy" / "gunicorn.conf.py"
# The modules whose `time` clocks the rate windows: the per-key limit's, and the failed
# authentications' (glowing_fiesta.bruteforce and django-ratelimit's own).
RATE_CLOCKS = ("apikeys.ratelimit", "glowing_fiesta.bruteforce", "django_ratelimit.core")

# Unmanaged (hand-made) tables: Django's flush after a transactional test leaves them alone.
# Operations the OpenAPI schema and the docs pages built from it must always show.
DOCUMENTED_PATHS = {
    "/api/metrics/counter",
    "/api/metrics/value",
    "/api/metrics/batch",
    "/api/metrics/{name}",
    "/api/batches/{batch_id}",
    "/api/keys/me",
}
POINT_TABLES = (
    "metric_points",
    "metric_rollup_minute",
    "metric_rollup_15m",
    "metric_rollup_hour",
    "metric_rollup_day",
)


def truncate_point_tables() -> None:
    """Empty the point and rollup tables (for `transaction=True` tests, before and after), and
    drop the compacted days' partitions with their markers."""
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {', '.join(POINT_TABLES)}, metric_compacted_days")
        cursor.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'metric_points_compact'::regclass"
        )
        for (name,) in cursor.fetchall():
            cursor.execute(f'DROP TABLE "{name}"')


def post(client, path: str, body, **headers: str):
    """POST `body` as JSON with extra headers (`Idempotency-Key="k"`)."""
    return client.post(path, json.dumps(body), content_type="application/json", headers=headers)


def post_async(client, path: str, body, **headers: str):
    return post(client, path, body, Prefer="respond-async", **headers)


def assert_problem(
    response,
    status: int,
    slug: str | None = None,
    word: str | None = None,
    *,
    field: str | None = None,
) -> dict:
    """Assert an RFC 9457 problem of `status` (and type `slug`, a `word` in its detail, an error
    naming `field`); return its body."""
    assert response.status_code == status, response.content
    assert response["Content-Type"] == PROBLEM
    body = response.json()
    assert body["status"] == status
    assert {"type", "title", "detail"} <= body.keys()
    if slug is not None:
        assert body["type"] == TYPE_PREFIX + slug, body
    if word is not None:
        assert word in body["detail"], body
    if field is not None:
        assert field in {e["field"] for e in body["errors"]}, body
        assert field in body["detail"], body
    return body


def ingest(kind: str, name: str, *points: tuple) -> None:
    """Write through the real write path; points: (value, when) or (value, when, tags)."""
    points_ingest(points=[PointInput(kind, name, p[0], p[1], *p[2:]) for p in points])


def django_setup_run(env: dict[str, str]) -> subprocess.CompletedProcess:
    """`django.setup()` with the service's settings in a fresh interpreter under `env`, output
    captured: how a start-up refusal looks to whoever starts a process."""
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        env={**env, "DJANGO_SETTINGS_MODULE": "glowing_fiesta.settings"},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def wait_for(
    predicate: Callable[[], object],
    *,
    timeout: float,
    what: str,
    log: Callable[[], str] | None = None,
    interval: float = 0.1,
) -> object:
    """Poll `predicate` every `interval` s until it returns something truthy; fail after
    `timeout` seconds, showing `log()` when given."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            details = f"\n--- log ---\n{log()}" if log else ""
            pytest.fail(f"timed out after {timeout} s waiting for {what}{details}")
        time.sleep(interval)


def longest_query_target() -> str:
    """The longest request target GET /api/metrics/{name} takes, as a client that percent-encodes
    everything but letters, digits and `_.-` in keys sends it: a name of NAME_MAX characters,
    TAGS_MAX tag filters (a series holds no more tags) of a 64-character key and a value of
    TAG_VALUE_MAX characters, both timestamps, the longest aggregation, zone and fill, group_by."""

    def encoded(text: str) -> str:
        return "".join(f"%{ord(c):02X}" for c in text)

    key = "k" * 64
    when = encoded("2026-03-29T00:00:00.000000+01:00")
    params = [
        ("from", when),
        ("to", when),
        ("interval", max(selectors.INTERVALS, key=len)),
        ("aggregation", max(selectors.AGGREGATIONS, key=len)),
        ("tz", encoded(max(zoneinfo.available_timezones(), key=len))),
        ("fill", max(selectors.FILLS, key=len)),
        ("group_by", key),
    ]
    params += [("tag", key + encoded(":" + "v" * points.TAG_VALUE_MAX))] * points.TAGS_MAX
    name = encoded("a" * points.NAME_MAX)
    return f"/api/metrics/{name}?" + "&".join(f"{k}={v}" for k, v in params)


def gunicorn_conf_value(name: str) -> object:
    """A constant of deploy/gunicorn.conf.py, read without running the file (running it patches
    gunicorn's error pages in this process)."""
    for node in ast.parse(GUNICORN_CONF.read_text()).body:
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == [
            name
        ]:
            return ast.literal_eval(node.value)
    raise LookupError(name)
