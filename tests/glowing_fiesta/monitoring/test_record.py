"""Each recording spot, through the API in-process or real gunicorn workers, read back from
GET /metrics as deltas."""

from __future__ import annotations

import json
import time
from datetime import timedelta

import pytest
from django.test import override_settings
from django.utils import timezone

from apikeys.services import apikey_create, apikey_revoke
from metrics.models import IngestBatch
from tests.processes import samples, scrape_text, value

pytestmark = pytest.mark.django_db

FAILURES = "glowing_fiesta_ingestion_failures_total"


@pytest.fixture
def scrape(make_api_client):
    reader = make_api_client(scopes=["read"])

    def read() -> dict:
        response = reader.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {reader.raw_key}")
        assert response.status_code == 200
        return samples(response.content.decode())

    return read


def _post(client, path: str, body, **extra):
    data = body if isinstance(body, str | bytes) else json.dumps(body)
    return client.post(
        path, data, content_type=extra.pop("content_type", "application/json"), **extra
    )


@pytest.mark.parametrize(
    ("reason", "send"),
    [
        ("invalid", lambda c, a: _post(c, "/api/metrics/counter", {"name": ""})),
        ("invalid", lambda c, a: _post(c, "/api/metrics/batch", "{not json")),
        ("too_large", lambda c, a: _post(c, "/api/metrics/batch", "[" + " " * 600_000 + "]")),
        ("unsupported_media", lambda c, a: _post(c, "/api/metrics/counter", "x", content_type="text/plain")),
        ("unauthenticated", lambda c, a: _post(a, "/api/metrics/counter", {"name": "x"})),
        ("type_conflict", lambda c, a: _post(c, "/api/metrics/value", {"name": "typed", "value": 1})),
    ],
)  # fmt: skip
def test_each_refused_write_counts_once_under_its_reason(
    api_client, client_anon, scrape, reason, send
):
    assert _post(api_client, "/api/metrics/counter", {"name": "typed"}).status_code == 201
    before = scrape()
    response = send(api_client, client_anon)
    assert response.status_code >= 400
    after = scrape()
    assert value(after, FAILURES, reason=reason) == value(before, FAILURES, reason=reason) + 1
    total = sum(v for k, v in after.items() if k[0] == FAILURES)
    assert total == sum(v for k, v in before.items() if k[0] == FAILURES) + 1


@override_settings(METRIC_MAX_SERIES=1)
def test_series_limit_counts_as_its_own_reason(api_client, scrape):
    assert (
        _post(api_client, "/api/metrics/counter", {"name": "few", "tags": {"a": "1"}}).status_code
        == 201
    )
    before = scrape()
    response = _post(api_client, "/api/metrics/counter", {"name": "few", "tags": {"a": "2"}})
    assert response.status_code == 422
    assert (
        value(scrape(), FAILURES, reason="series_limit")
        == value(before, FAILURES, reason="series_limit") + 1
    )


@pytest.mark.usefixtures("rate_windows_held")
def test_rate_limited_write_counts_as_failure_and_rate_limited_request(make_api_client, scrape):
    client = make_api_client(rate_limit=1)
    assert _post(client, "/api/metrics/counter", {"name": "limited"}).status_code == 201
    before = scrape()
    assert _post(client, "/api/metrics/counter", {"name": "limited"}).status_code == 429
    after = scrape()
    limited = "glowing_fiesta_rate_limited_requests_total"
    assert value(after, limited) == value(before, limited) + 1
    assert (
        value(after, FAILURES, reason="rate_limited")
        == value(before, FAILURES, reason="rate_limited") + 1
    )


def test_reads_and_refused_reads_are_not_ingestion_failures(api_client, scrape):
    before = scrape()
    assert api_client.get("/api/metrics/nothing.here").status_code == 404
    assert api_client.get("/api/metrics/counter?aggregation=bogus").status_code in (400, 404)
    assert api_client.post("/api/keys/me").status_code == 405
    after = scrape()
    assert [k for k in after if k[0] == FAILURES and after[k] != before.get(k, 0)] == []


def test_auth_failures_by_reason(make_api_client, client_anon, scrape):
    revoked = make_api_client()
    apikey_revoke(key=revoked.api_key)
    reader = make_api_client(scopes=["read"])
    before = scrape()
    assert client_anon.get("/api/keys/me").status_code == 401
    assert revoked.get("/api/keys/me").status_code == 401
    assert _post(reader, "/api/metrics/counter", {"name": "x"}).status_code == 403
    after = scrape()
    auth = "glowing_fiesta_auth_failures_total"
    for reason in ("missing", "revoked", "insufficient_scope"):
        assert value(after, auth, reason=reason) == value(before, auth, reason=reason) + 1, reason
    assert (
        value(after, FAILURES, reason="unauthenticated")
        == value(before, FAILURES, reason="unauthenticated") + 1
    )


@pytest.mark.parametrize(
    ("query", "labels"),
    [
        ("interval=hour&aggregation=sum", {"interval": "hour", "source": "metric_rollup_hour"}),
        ("interval=day&aggregation=max", {"interval": "day", "source": "metric_rollup_day"}),
        ("interval=minute&aggregation=avg&tz=Asia/Kolkata", {"interval": "minute", "source": "metric_rollup_minute"}),
        ("interval=hour&aggregation=p95", {"interval": "hour", "source": "raw"}),
    ],
)  # fmt: skip
def test_aggregation_latency_by_interval_and_source(api_client, scrape, query, labels):
    assert _post(api_client, "/api/metrics/value", {"name": "lat", "value": 3}).status_code == 201
    before = scrape()
    assert api_client.get(f"/api/metrics/lat?{query}").status_code == 200
    after = scrape()
    name = "glowing_fiesta_aggregation_latency_seconds_count"
    assert value(after, name, **labels) == value(before, name, **labels) + 1


def test_one_batch_is_one_timed_write_of_its_points(api_client, scrape):
    before = scrape()
    points = [{"type": "counter", "name": f"w.{i % 3}", "value": 1} for i in range(200)]
    assert _post(api_client, "/api/metrics/batch", {"points": points}).status_code == 201
    after = scrape()
    assert (
        value(after, "glowing_fiesta_db_write_latency_seconds_count")
        == value(before, "glowing_fiesta_db_write_latency_seconds_count") + 1
    )
    assert (
        value(after, "glowing_fiesta_db_write_points_sum")
        == value(before, "glowing_fiesta_db_write_points_sum") + 200
    )
    assert (
        value(after, "glowing_fiesta_db_write_points_bucket", le="250.0")
        == value(before, "glowing_fiesta_db_write_points_bucket", le="250.0") + 1
    )
    assert value(after, "glowing_fiesta_db_write_points_bucket", le="100.0") == value(
        before, "glowing_fiesta_db_write_points_bucket", le="100.0"
    )
    ingested = "glowing_fiesta_points_ingested_total"
    assert value(after, ingested, path="sync") == value(before, ingested, path="sync") + 200


@pytest.mark.django_db(transaction=True)
def test_a_write_refused_by_the_database_counts_as_database(make_api_client, clean_point_tables):
    import psycopg

    from tests.processes import worker_database_url

    client = make_api_client()
    reader = make_api_client(scopes=["read"])

    def read() -> dict:
        return samples(reader.get("/metrics").content.decode())

    assert _post(client, "/api/metrics/counter", {"name": "locked"}).status_code == 201
    before = read()
    with psycopg.connect(worker_database_url()) as other:
        other.execute("LOCK TABLE metric_points IN ACCESS EXCLUSIVE MODE")
        response = _post(client, "/api/metrics/counter", {"name": "locked"})
        other.rollback()
    assert response.status_code == 503
    after = read()
    assert (
        value(after, FAILURES, reason="database") == value(before, FAILURES, reason="database") + 1
    )


def test_any_method_token_shares_one_label(api_client, scrape):
    before = scrape()
    for method in ("FOO", "BAR", "PURGE"):
        api_client.generic(method, "/api/metrics/counter")
    after = scrape()
    name = "glowing_fiesta_request_duration_seconds_count"
    methods = {dict(labels)["method"] for n, labels in after if n == name}
    assert methods <= {"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "other"}
    others = sum(
        v for (n, labels), v in after.items() if n == name and dict(labels)["method"] == "other"
    )
    others_before = sum(
        v for (n, labels), v in before.items() if n == name and dict(labels)["method"] == "other"
    )
    assert others == others_before + 3


def test_what_a_statsd_flush_cannot_store_counts_by_reason(scrape):
    from datetime import UTC, datetime

    from protocols.management.commands.statsd import count_failures
    from protocols.statsd import Aggregator
    from protocols.statsd_flush import WriteOutcome

    aggregator = Aggregator(max_series=100, max_samples=100)
    aggregator.add_packet(b"ok:1|c\nnot a line\nalso:bad|zz")
    flush = aggregator.flush(now=datetime.now(UTC))
    outcome = WriteOutcome(stored=1, conflicts={"typed": 3}, series_limited={"wide": 2}, lost=4)
    before = scrape()
    count_failures(flush, outcome)
    after = scrape()

    def delta(reason: str) -> float:
        return value(after, FAILURES, reason=reason) - value(before, FAILURES, reason=reason)

    assert flush.stats.invalid == 2
    assert (delta("invalid"), delta("type_conflict"), delta("series_limit"), delta("database")) == (
        2,
        3,
        2,
        4,
    )


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_bad_write_raises_ingestion_failures_by_exactly_one(stack):
    service = stack.serve(workers=2)
    key = {"X-API-Key": stack.write_key}
    before = samples(scrape_text(service, stack.read_key))
    response = service.request("POST", "/api/metrics/value", {"name": "bad", "value": "x"}, **key)
    assert response.status == 400
    after = samples(scrape_text(service, stack.read_key))
    failures = "glowing_fiesta_ingestion_failures_total"
    assert value(after, failures, reason="invalid") == value(before, failures, reason="invalid") + 1
    others = {
        k: v for k, v in after.items() if k[0] == failures and k[1] != (("reason", "invalid"),)
    }
    assert all(v == before.get(k, 0) for k, v in others.items()), others
    assert (
        value(
            after,
            "glowing_fiesta_request_duration_seconds_count",
            method="POST",
            route="metric-value",
            status="400",
        )
        == 1
    )


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_retention_run_raises_retention_deleted(stack):
    key, _ = apikey_create(name="old", scopes=["write"])
    old = timezone.now() - timedelta(days=3)
    IngestBatch.objects.create(
        api_key=key, state="done", payload=[], points=0, created_at=old, updated_at=old,
        processed_at=old,
    )  # fmt: skip
    service = stack.serve(workers=1)
    before = samples(scrape_text(service, stack.read_key))
    assert value(before, "glowing_fiesta_retention_last_success_timestamp_seconds") == 0
    started = time.time()
    result = stack.manage("apply_retention")
    assert result.returncode == 0, result.stderr
    after = samples(scrape_text(service, stack.read_key))
    deleted = "glowing_fiesta_retention_deleted_total"
    assert value(after, deleted, table="ingest_batches") == 1
    assert value(before, deleted, table="ingest_batches") == 0
    last = value(after, "glowing_fiesta_retention_last_success_timestamp_seconds")
    assert started <= last <= time.time()


def test_writes_outside_the_namespaces_count_as_namespace(make_api_client, scrape):
    team = make_api_client(namespaces=["team."])
    before = scrape()
    refused = _post(team, "/api/metrics/counter", {"name": "other.x"})
    assert refused.status_code == 403
    lines = b"team cpu=1\nother cpu=2\nother mem=3\n"
    partial = team.post("/api/v2/write?org=o&bucket=b", lines, content_type="text/plain")
    assert partial.status_code == 422
    after = scrape()
    # One refused JSON write, and each of the two points the line protocol refused.
    assert (
        value(after, FAILURES, reason="namespace")
        == value(before, FAILURES, reason="namespace") + 3
    )
