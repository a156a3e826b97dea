"""InfluxDB's write endpoints over real HTTP, written to with the real influxdb-client library."""

import gzip
import http.client
import json
import os
import subprocess
import sys
import tempfile
import tracemalloc
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import pytest
from django.db import OperationalError
from django.test import override_settings
from influxdb_client import InfluxDBClient, Point, WritePrecision
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.rest import ApiException

from apikeys.services import apikey_create
from glowing_fiesta.devstack import free_port
from glowing_fiesta.exceptions import DATABASE_RETRY_AFTER_SECONDS
from idempotency.models import IdempotencyRecord
from metrics.models import MetricPoint, MetricType
from metrics.services import PointInput, points_ingest
from protocols.views.influx import influx_exception_handler
from tests.processes import healthz_wait, worker_database_url

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("clean_point_tables"),
]

V2 = "/api/v2/write?org=acme&bucket=telegraf"


@pytest.fixture
def when():
    """A minute-aligned time an hour ago, so each point falls in a known minute bucket."""
    return datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=1)


def ns(moment: datetime) -> int:
    return int(moment.timestamp()) * 10**9 + moment.microsecond * 1000


def request(live_server, method, path, body=b"", headers=None):
    address = urlsplit(live_server.url)
    conn = http.client.HTTPConnection(address.hostname, address.port, timeout=120)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        data = response.read()
        return response.status, dict(response.getheaders()), data
    finally:
        conn.close()


def write(live_server, key, body, path=V2, **headers):
    sent = {"Authorization": f"Token {key}", "Content-Type": "text/plain; charset=utf-8"}
    status, got, data = request(live_server, "POST", path, body, {**sent, **headers})
    return status, got, (json.loads(data) if data else None)


def buckets(live_server, key, name, moment, aggregation):
    query = urlencode(
        {
            "from": (moment - timedelta(minutes=1)).isoformat(),
            "to": (moment + timedelta(minutes=2)).isoformat(),
            "interval": "minute",
            "aggregation": aggregation,
        }
    )
    status, _, data = request(
        live_server, "GET", f"/api/metrics/{name}?{query}", headers={"X-API-Key": key}
    )
    assert status == 200, data
    return [b["value"] for b in json.loads(data)["buckets"]]


def assert_influx_error(status, headers, body, expected_status, code):
    assert status == expected_status, body
    assert headers["Content-Type"] == "application/json"
    assert body["code"] == code
    assert isinstance(body["message"], str) and body["message"]


# --- the real client -------------------------------------------------------------------------


@pytest.mark.parametrize("gzipped", [False, True], ids=["plain", "gzip"])
def test_client_writes_points_and_raw_lines_that_the_query_api_returns(
    live_server, raw_key, when, gzipped
):
    client = InfluxDBClient(
        url=live_server.url, token=raw_key, org="acme", enable_gzip=gzipped, timeout=30_000
    )
    with client:
        writer = client.write_api(write_options=SYNCHRONOUS)
        point = (
            Point("cpu")
            .tag("host", "web 1")
            .tag("dc", "eu,west")
            .field("value", 3)
            .field("usage", 12.5)
            .time(when + timedelta(seconds=1), WritePrecision.NS)
        )
        writer.write(bucket="telegraf", record=point)
        writer.write(
            bucket="telegraf",
            record=[
                f"cpu,host=web\\ 1,dc=eu\\,west usage=7.5 {(ns(when) + 2 * 10**9) // 1000}",
                f"disk,host=a used=40i,free=60u {(ns(when) + 10**9) // 1000}",
            ],
            write_precision=WritePrecision.US,
        )
    assert buckets(live_server, raw_key, "cpu", when, "sum") == [None, 3.0, None]
    assert buckets(live_server, raw_key, "cpu.usage", when, "sum") == [None, 20.0, None]
    assert buckets(live_server, raw_key, "cpu.usage", when, "count") == [0, 2, 0]
    assert buckets(live_server, raw_key, "disk.used", when, "max") == [None, 40.0, None]
    assert buckets(live_server, raw_key, "disk.free", when, "min") == [None, 60.0, None]
    stored = MetricPoint.objects.filter(metric__name="cpu.usage").order_by("recorded_at")
    assert [(p.value, p.recorded_at) for p in stored] == [
        (12.5, when + timedelta(seconds=1)),
        (7.5, when + timedelta(seconds=2)),
    ]
    assert {p.series.tags["host"] for p in stored.select_related("series")} == {"web 1"}
    assert {p.series.tags["dc"] for p in stored.select_related("series")} == {"eu,west"}


def test_the_client_sees_a_malformed_batch_as_400_with_the_line(live_server, raw_key):
    client = InfluxDBClient(url=live_server.url, token=raw_key, org="acme")
    with client, pytest.raises(ApiException) as caught:
        client.write_api(write_options=SYNCHRONOUS).write(
            bucket="telegraf", record=["cpu value=1", "cpu value=oops"]
        )
    assert caught.value.status == 400
    assert json.loads(caught.value.body)["line"] == 2
    assert MetricPoint.objects.count() == 0


# --- answers ---------------------------------------------------------------------------------


def test_the_1x_path_takes_db_and_single_letter_precisions(live_server, raw_key, when):
    body = f"mem,host=a value=5 {int(when.timestamp()) // 60}\nmem,host=a value=7 {int(when.timestamp()) // 60}"
    status, _, data = write(live_server, raw_key, body, "/write?db=telegraf&precision=m")
    assert (status, data) == (204, None)
    assert buckets(live_server, raw_key, "mem", when, "sum") == [None, 12.0, None]


def test_a_malformed_line_is_400_naming_it_and_nothing_is_stored(live_server, raw_key):
    body = "cpu value=1\n# fine\ncpu,host=a value=2\ncpu,host=a value=\ncpu value=3"
    status, headers, data = write(live_server, raw_key, body)
    assert_influx_error(status, headers, data, 400, "invalid")
    assert data["line"] == 4
    assert "line 4" in data["message"]
    assert MetricPoint.objects.count() == 0


def test_an_out_of_window_line_among_good_ones_is_a_partial_write(live_server, raw_key, when):
    old = ns(when - timedelta(days=8))
    body = f"cpu value=1 {ns(when)}\ncpu value=2 {old}\ncpu value=4 {ns(when)}\n"
    status, headers, data = write(live_server, raw_key, body)
    assert_influx_error(status, headers, data, 422, "unprocessable entity")
    assert data["message"].startswith("partial write: dropped 1 points: line 2: timestamp")
    assert buckets(live_server, raw_key, "cpu", when, "sum") == [None, 5.0, None]


def test_strings_booleans_bad_names_and_counters_are_dropped_and_the_rest_stored(
    live_server, raw_key, when
):
    points_ingest(points=[PointInput(MetricType.COUNTER, "jobs.done", 1.0, when, {})])
    t = ns(when)
    body = "\n".join(
        [
            f'app,host=a latency=3,state="ok",up=true {t}',
            f"jobs done=5 {t}",
            f"bad\\ name value=1 {t}",
            f"app,host=a latency=4 {t}",
        ]
    )
    status, headers, data = write(live_server, raw_key, body)
    assert_influx_error(status, headers, data, 422, "unprocessable entity")
    message = data["message"]
    assert message.startswith("partial write: dropped 4 points: line 1: ")
    assert "'state' is a string" in message and "'up' is a boolean" in message
    assert "line 2: metric 'jobs.done' is a counter" in message
    assert "line 3: metric name 'bad name' must be" in message
    assert buckets(live_server, raw_key, "app.latency", when, "sum") == [None, 7.0, None]
    assert MetricPoint.objects.count() == 3  # the counter's own point and the two latencies


def test_10000_points_are_stored_and_10001_are_413(live_server, raw_key, when):
    t = ns(when)
    fields = ",".join(f"f{i}={i}" for i in range(10))
    lines = [f"bulk,host=h{n % 7} {fields} {t + n}" for n in range(1000)]
    status, _, data = write(live_server, raw_key, "\n".join(lines))
    assert (status, data) == (204, None)
    assert MetricPoint.objects.count() == 10_000
    status, headers, data = write(live_server, raw_key, "\n".join([*lines, f"bulk one=1 {t}"]))
    assert_influx_error(status, headers, data, 413, "request too large")
    assert MetricPoint.objects.count() == 10_000


def test_truncated_gzip_is_400_and_stores_nothing(live_server, raw_key):
    packed = gzip.compress(b"cpu value=1\n" * 100)
    status, headers, data = write(
        live_server, raw_key, packed[: len(packed) // 2], **{"Content-Encoding": "gzip"}
    )
    assert_influx_error(status, headers, data, 400, "invalid")
    assert "truncated" in data["message"]
    assert MetricPoint.objects.count() == 0


def test_a_1_gib_gzip_bomb_is_413_and_holds_at_most_the_cap(live_server, raw_key):
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(4 << 20)
    bomb = b"".join(packer.compress(zeros) for _ in range(256)) + packer.flush()
    assert len(bomb) < 2 << 20  # 1 GiB inflated
    with override_settings(INFLUX_MAX_BODY_BYTES=8 << 20):
        tracemalloc.start()
        try:
            status, headers, data = write(
                live_server, raw_key, bomb, **{"Content-Encoding": "gzip"}
            )
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert_influx_error(status, headers, data, 413, "request too large")
    # The cap, one read chunk and the compressed body itself; never the gigabyte.
    assert peak < (8 << 20) + (8 << 20)


def test_a_100_mb_body_is_413(live_server, raw_key):
    body = b"cpu value=1\n" * (100_000_000 // 12)
    status, headers, data = write(live_server, raw_key, body)
    assert_influx_error(status, headers, data, 413, "request too large")
    assert MetricPoint.objects.count() == 0


def test_an_empty_body_is_400_as_influxdb_answers(live_server, raw_key):
    status, headers, data = write(live_server, raw_key, "# only a comment\n")
    assert_influx_error(status, headers, data, 400, "invalid")
    assert data["message"] == "writing requires points"


@pytest.mark.parametrize(
    "path",
    [
        "/api/v2/write?bucket=telegraf",
        "/api/v2/write?org=&bucket=telegraf",
        "/api/v2/write?org=acme",
        "/api/v2/write?org=acme&bucket=",
        "/write",
        "/write?db=",
        "/api/v2/write?org=acme&bucket=b&precision=h",
        "/write?db=d&precision=weeks",
    ],
)
def test_missing_names_and_unknown_precisions_are_400(live_server, raw_key, path):
    status, headers, data = write(live_server, raw_key, "cpu value=1", path)
    assert_influx_error(status, headers, data, 400, "invalid")
    assert MetricPoint.objects.count() == 0


def test_orgid_stands_for_org(live_server, raw_key):
    status, _, _ = write(live_server, raw_key, "cpu value=1", "/api/v2/write?orgID=1&bucket=b")
    assert status == 204


def test_the_1x_path_also_says_error_for_1x_clients(live_server, raw_key):
    status, headers, data = write(live_server, raw_key, "cpu value=x", "/write?db=telegraf")
    assert_influx_error(status, headers, data, 400, "invalid")
    assert data["error"] == data["message"]


def test_unsupported_content_encoding_is_415(live_server, raw_key):
    status, headers, data = write(live_server, raw_key, "cpu value=1", **{"Content-Encoding": "br"})
    assert_influx_error(status, headers, data, 415, "unsupported media type")


def test_a_type_conflict_that_commits_after_the_look_up_drops_only_its_lines(
    live_server, raw_key, when, monkeypatch, caplog
):
    points_ingest(points=[PointInput(MetricType.COUNTER, "jobs.done", 1.0, when, {})])
    # As if the counter had been created by another request just after the look-up.
    monkeypatch.setattr("metrics.services._existing_types", lambda wanted: {})
    t = ns(when)
    status, headers, data = write(live_server, raw_key, f"jobs done=5 {t}\nq depth=2 {t}")
    assert_influx_error(status, headers, data, 422, "unprocessable entity")
    assert data["message"] == (
        "partial write: dropped 1 points: line 1: metric 'jobs.done' is a counter; "
        "line protocol writes values"
    )
    assert "influx write retried without refused metrics" in caplog.messages
    assert buckets(live_server, raw_key, "q.depth", when, "sum") == [None, 2.0, None]


def test_a_metric_at_its_series_limit_is_dropped_and_the_others_stored(live_server, raw_key, when):
    t = ns(when)
    body = "\n".join([*(f"a,host=h{n} value=1 {t}" for n in range(3)), f"b value=2 {t}"])
    with override_settings(METRIC_MAX_SERIES=2):
        status, headers, data = write(live_server, raw_key, body)
    assert_influx_error(status, headers, data, 422, "unprocessable entity")
    assert data["message"].startswith("partial write: dropped 3 points: line 1: Metric 'a'")
    assert buckets(live_server, raw_key, "b", when, "sum") == [None, 2.0, None]
    assert MetricPoint.objects.count() == 1


def test_an_unreachable_database_is_503_with_retry_after():
    response = influx_exception_handler(OperationalError("connection refused"), {"view": None})
    assert response.status_code == 503
    assert response.data["code"] == "unavailable"
    assert response["Retry-After"] == str(DATABASE_RETRY_AFTER_SECONDS)


@pytest.mark.server
def test_gunicorn_takes_a_chunked_gzip_body_as_telegraf_sends_it(raw_key, when):
    """Telegraf streams gzip with Transfer-Encoding: chunked and no Content-Length."""
    port = free_port()
    command = [
        sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "1",
        "--timeout", "30", "glowing_fiesta.wsgi:application",
    ]  # fmt: skip
    root = Path(__file__).resolve().parents[2]
    with tempfile.TemporaryFile("w+") as errors:
        server = subprocess.Popen(  # noqa: S603 - a fixed command line
            command,
            env={**os.environ, "DATABASE_URL": worker_database_url()},
            cwd=root,
            stdout=subprocess.DEVNULL,
            stderr=errors,
        )
        try:
            healthz_wait(port, server, timeout=30, log=errors.read)
            packed = gzip.compress(f"cpu value=1 {ns(when)}\ncpu value=2 {ns(when)}\n".encode())
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            conn.request(
                "POST",
                V2,
                body=iter([packed[:10], packed[10:]]),
                headers={"Authorization": f"Token {raw_key}", "Content-Encoding": "gzip"},
                encode_chunked=True,
            )
            response = conn.getresponse()
            assert response.status == 204, response.read()
        finally:
            server.terminate()
            server.wait(30)
    assert MetricPoint.objects.count() == 2


# --- keys, scopes, limits --------------------------------------------------------------------


def test_a_missing_key_is_401_in_influx_format(live_server):
    status, headers, data = request(live_server, "POST", V2, b"cpu value=1")
    assert_influx_error(status, headers, json.loads(data), 401, "unauthorized")
    assert "WWW-Authenticate" in headers


def test_a_wrong_key_is_401_in_influx_format(live_server, raw_key):
    status, headers, data = write(live_server, raw_key[:-4] + "AAAA", "cpu value=1")
    assert_influx_error(status, headers, data, 401, "unauthorized")


def test_a_read_only_key_is_403_in_influx_format(live_server):
    _, key = apikey_create(name="reader", scopes=["read"], rate_limit=100)
    status, headers, data = write(live_server, key, "cpu value=1")
    assert_influx_error(status, headers, data, 403, "forbidden")
    assert MetricPoint.objects.count() == 0


def test_keys_are_also_accepted_as_x_api_key_and_bearer(live_server, raw_key):
    for headers in ({"X-API-Key": raw_key}, {"Authorization": f"Bearer {raw_key}"}):
        status, _, _ = request(live_server, "POST", V2, b"cpu value=1", headers)
        assert status == 204
    assert MetricPoint.objects.count() == 2


@pytest.mark.usefixtures("rate_windows_held")
def test_rate_limited_key_is_429_with_retry_after_in_influx_format(live_server):
    _, key = apikey_create(name="slow", scopes=["write"], rate_limit=1)
    assert write(live_server, key, "cpu value=1")[0] == 204
    status, headers, data = write(live_server, key, "cpu value=1")
    assert_influx_error(status, headers, data, 429, "too many requests")
    assert int(headers["Retry-After"]) >= 1
    assert headers["X-RateLimit-Limit"] == "1"


def test_get_is_405_in_influx_format(live_server, raw_key):
    status, headers, data = request(live_server, "GET", V2, headers={"X-API-Key": raw_key})
    assert_influx_error(status, headers, json.loads(data), 405, "method not allowed")


# --- idempotency -----------------------------------------------------------------------------


def test_an_idempotency_key_stores_once_and_replays(live_server, raw_key, when):
    body = f"cpu value=1 {ns(when)}\ncpu value=2 {ns(when - timedelta(days=9))}"
    first = write(live_server, raw_key, body, **{"Idempotency-Key": "batch-1"})
    again = write(live_server, raw_key, body, **{"Idempotency-Key": "batch-1"})
    assert first[0] == again[0] == 422
    assert first[2] == again[2]
    assert again[1]["Idempotent-Replayed"] == "true"
    assert MetricPoint.objects.count() == 1
    assert IdempotencyRecord.objects.get().status_code == 422
    other = write(live_server, raw_key, "cpu value=3", **{"Idempotency-Key": "batch-1"})
    assert_influx_error(*other, 422, "unprocessable entity")
    assert MetricPoint.objects.count() == 1


def test_an_idempotent_full_write_replays_204(live_server, raw_key):
    first = write(live_server, raw_key, "cpu value=1", **{"Idempotency-Key": "k2"})
    again = write(live_server, raw_key, "cpu value=1", **{"Idempotency-Key": "k2"})
    assert first[0] == again[0] == 204
    assert MetricPoint.objects.count() == 1
