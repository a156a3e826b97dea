"""POST /api/v1/write: Prometheus remote write 1.0 requests built from the protobuf schema,
snappy-compressed, against a live server; what was stored is read back through the query API."""

from __future__ import annotations

import struct
import threading
import time

import cramjam
import psycopg
import pytest
import requests
from django.db import connection

from apikeys.services import apikey_create
from metrics.models import Metric, MetricPoint, Series
from protocols.models import CumulativeStream
from protocols.prometheus_pb import WriteRequest

from .clients import post, post_chunked, write_request

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("clean_point_tables"),
]

STALE_NAN = struct.unpack("<d", struct.pack("<Q", 0x7FF0000000000002))[0]
MINUTE_MS = 60_000


def buckets(url: str, key: str, name: str, aggregation: str, start_ms: int, end_ms: int) -> list:
    response = requests.get(
        f"{url}/api/metrics/{name}",
        params={
            "aggregation": aggregation,
            "interval": "minute",
            "from": start_ms / 1000,
            "to": end_ms / 1000,
        },
        headers={"X-API-Key": key},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return [b["value"] for b in response.json()["buckets"]]


def _database_url() -> str:
    params = connection.get_connection_params()
    return (
        f"postgresql://{params.get('user', '')}@{params.get('host', '127.0.0.1')}:"
        f"{params.get('port', 5432)}/{params['dbname']}"
    )


def _minute_start_ms() -> int:
    # Four whole minutes ago, so that four samples a minute apart all lie in the past.
    return (int(time.time() * 1000) // MINUTE_MS - 5) * MINUTE_MS


def test_counter_with_a_reset_stores_increases_30_5_15(live_server, raw_key):
    start = _minute_start_ms()
    labels = {"__name__": "http_requests_total", "job": "api", "code": "200"}
    for n, value in enumerate((100, 130, 5, 20)):
        response = post(
            live_server.url, raw_key, write_request([(labels, [(value, start + n * MINUTE_MS)])])
        )
        assert response.status_code == 204, response.text

    sums = buckets(
        live_server.url, raw_key, "http_requests_total", "sum", start, start + 4 * MINUTE_MS
    )
    assert sums == [0, 30, 5, 15]  # the first sample is the baseline
    assert Metric.objects.get(name="http_requests_total").type == "counter"
    assert sorted(MetricPoint.objects.values_list("value", flat=True)) == [5, 15, 30]


def test_counter_samples_in_one_request_and_a_resent_request_count_once(live_server, raw_key):
    start = _minute_start_ms()
    samples = [(v, start + n * MINUTE_MS) for n, v in enumerate((100, 130, 5, 20))]
    body = write_request([({"__name__": "jobs_done_total"}, samples)])

    assert post(live_server.url, raw_key, body).status_code == 204
    assert post(live_server.url, raw_key, body).status_code == 204  # a retry

    sums = buckets(live_server.url, raw_key, "jobs_done_total", "sum", start, start + 4 * MINUTE_MS)
    assert sums == [0, 30, 5, 15]


def test_gauge_stores_its_samples_and_skips_stale_markers(live_server, raw_key):
    start = _minute_start_ms()
    samples = [(3.5, start), (7, start + MINUTE_MS), (STALE_NAN, start + 2 * MINUTE_MS)]
    body = write_request([({"__name__": "queue_depth", "queue": "mail"}, samples)])

    response = post(live_server.url, raw_key, body)

    assert response.status_code == 204, response.text
    values = buckets(live_server.url, raw_key, "queue_depth", "max", start, start + 3 * MINUTE_MS)
    assert values == [3.5, 7, None]
    assert Metric.objects.get(name="queue_depth").type == "value"
    assert not CumulativeStream.objects.exists()


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(
            bytes(cramjam.snappy.compress(WriteRequest().SerializeToString() + b"\x0a\x00")),
            id="framed-snappy",
        ),
        pytest.param(b"garbage that is no snappy at all", id="garbage"),
        pytest.param(bytes(cramjam.snappy.compress_raw(b"\xff\xff\xff\xff")), id="not-protobuf"),
    ],
)
def test_framed_snappy_or_garbage_is_400(live_server, raw_key, body):
    response = post(live_server.url, raw_key, body)

    assert response.status_code == 400
    assert response.headers["Content-Type"] == "application/problem+json"
    assert "cannot be read" in response.json()["detail"]


def test_refused_samples_are_400_after_the_valid_ones_are_stored(live_server, raw_key):
    now_ms = int(time.time() * 1000)
    old_ms = now_ms - 8 * 86_400_000
    many_labels = {"__name__": "wide"} | {f"l{i}": "x" for i in range(11)}
    body = write_request(
        [
            ({"__name__": "temperature", "room": "a"}, [(21.0, now_ms), (20.0, old_ms)]),
            (many_labels, [(1.0, now_ms)]),
            ({"__name__": "ten"} | {f"l{i}": "x" for i in range(10)}, [(2.0, now_ms)]),
        ]
    )

    response = post(live_server.url, raw_key, body)

    assert response.status_code == 400
    problem = response.json()
    assert problem["stored"] == 2
    assert problem["refused_series"] == 2
    assert "outside the accepted window" in problem["detail"]
    assert "at most 10 tags" in problem["detail"]
    assert sorted(MetricPoint.objects.values_list("value", flat=True)) == [2.0, 21.0]


def test_series_over_the_metric_limit_are_refused_and_others_stored(live_server, raw_key, settings):
    settings.METRIC_MAX_SERIES = 2
    now_ms = int(time.time() * 1000)
    body = write_request(
        [({"__name__": "crowded", "n": str(n)}, [(1.0, now_ms)]) for n in range(3)]
        + [({"__name__": "calm"}, [(1.0, now_ms)])]
    )

    response = post(live_server.url, raw_key, body)

    assert response.status_code == 400
    assert "limit of 2 tag sets" in response.json()["detail"]
    assert not Series.objects.filter(metric__name="crowded").exists()
    assert MetricPoint.objects.count() == 1


def test_5000_series_request_is_stored_in_one_transaction(live_server, raw_key):
    now_ms = int(time.time() * 1000)
    series = []
    for metric in ("load_a", "load_b", "load_c"):
        series += [({"__name__": metric, "host": f"h{n}"}, [(n, now_ms)]) for n in range(1000)]
    for metric in ("bytes_total", "errors_total"):
        series += [
            ({"__name__": metric, "host": f"h{n}"}, [(n, now_ms - 1000), (n + 5, now_ms)])
            for n in range(1000)
        ]
    assert len(series) == 5000

    body = write_request(series)
    seen: set[tuple[int, int]] = set()
    done = threading.Event()

    def watch() -> None:
        # Another session, reading both tables in one snapshot while the write runs.
        with psycopg.connect(_database_url(), autocommit=True) as conn:
            while not done.is_set():
                seen.add(
                    conn.execute(
                        "SELECT (SELECT count(*) FROM metric_points),"
                        " (SELECT count(*) FROM cumulative_streams)"
                    ).fetchone()
                )

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        response = post(live_server.url, raw_key, body)
    finally:
        done.set()
        watcher.join(10)

    assert response.status_code == 204, response.text
    assert MetricPoint.objects.count() == 5000
    assert CumulativeStream.objects.count() == 2000
    assert seen <= {(0, 0), (5000, 2000)}  # never a part of it: one transaction
    assert (0, 0) in seen
    start = now_ms // MINUTE_MS * MINUTE_MS
    assert buckets(live_server.url, raw_key, "errors_total", "sum", start, start + MINUTE_MS) == [
        5000
    ]


def test_auth_and_content_checks(live_server, raw_key, settings):
    body = write_request([({"__name__": "up"}, [(1.0, int(time.time() * 1000))])])
    read_only = apikey_create(name="ro", scopes=["read"], rate_limit=1000)[1]

    assert post(live_server.url, None, body).status_code == 401
    assert post(live_server.url, read_only, body).status_code == 403
    assert post(live_server.url, raw_key, body, **{"Content-Encoding": "gzip"}).status_code == 415
    v2 = post(
        live_server.url,
        raw_key,
        body,
        **{"Content-Type": "application/x-protobuf;proto=io.prometheus.write.v2.Request"},
    )
    assert v2.status_code == 415
    assert not MetricPoint.objects.exists()


@pytest.mark.parametrize(
    ("headers", "status", "named"),
    [
        ({}, 204, None),
        ({"Content-Type": "application/x-protobuf;proto=prometheus.WriteRequest"}, 204, None),
        ({"Content-Type": "Application/X-Protobuf"}, 204, None),
        ({"Content-Encoding": "Snappy"}, 204, None),
        # The test server (wsgiref) fills a missing Content-Type in as text/plain; gunicorn
        # leaves it empty, and the detail then says "Content-Type is missing".
        ({"Content-Type": None}, 415, "Content-Type"),
        ({"Content-Type": "application/octet-stream"}, 415, "Content-Type 'application/"),
        ({"Content-Type": "application/x-protobuf;proto=other.Message"}, 415, "Content-Type"),
        ({"Content-Encoding": None}, 415, "Content-Encoding is missing"),
        ({"Content-Encoding": "identity"}, 415, "Content-Encoding 'identity'"),
        ({"Content-Encoding": "zstd"}, 415, "Content-Encoding 'zstd'"),
    ],
)
def test_content_type_and_encoding_are_required_as_the_spec_says_senders_send_them(
    live_server, raw_key, headers, status, named
):
    body = write_request([({"__name__": "up"}, [(1.0, int(time.time() * 1000))])])
    sent = {
        "Authorization": f"Bearer {raw_key}",
        "Content-Type": "application/x-protobuf",
        "Content-Encoding": "snappy",
        "X-Prometheus-Remote-Write-Version": "0.1.0",
        **headers,
    }
    sent = {name: value for name, value in sent.items() if value is not None}
    # requests adds no Content-Type of its own to a bytes body.
    response = requests.post(f"{live_server.url}/api/v1/write", data=body, headers=sent, timeout=30)

    assert response.status_code == status, response.text
    if named:
        assert named in response.json()["detail"]
        assert response.headers["Content-Type"] == "application/problem+json"
    assert MetricPoint.objects.exists() == (status == 204)


def test_decompressed_body_cap_at_its_edge(live_server, raw_key, settings):
    now_ms = int(time.time() * 1000)
    request = WriteRequest()
    for n in range(40):
        ts = request.timeseries.add()
        ts.labels.add(name="__name__", value="up")
        ts.labels.add(name="instance", value=f"host-{n:04d}.example.org:9100")
        ts.samples.add(value=1.0, timestamp=now_ms)
    raw = request.SerializeToString()
    body = bytes(cramjam.snappy.compress_raw(raw))
    assert len(body) < len(raw)  # the cap is on what it inflates to

    settings.REMOTE_WRITE_MAX_BODY_BYTES = len(raw) - 1
    past = post(live_server.url, raw_key, body)
    settings.REMOTE_WRITE_MAX_BODY_BYTES = len(raw)
    at = post(live_server.url, raw_key, body)

    assert past.status_code == 413
    assert at.status_code == 204, at.text
    assert MetricPoint.objects.count() == 40


def test_a_chunked_body_the_server_cannot_read_is_411_not_an_empty_success(live_server, raw_key):
    body = write_request([({"__name__": "up"}, [(1.0, int(time.time() * 1000))])])

    response = post_chunked(live_server.url, raw_key, iter([body]))

    assert response.status == 411
    assert not MetricPoint.objects.exists()


def test_a_type_conflict_the_screening_missed_is_retried_without_that_metric(
    live_server, raw_key, monkeypatch
):
    # As if the metric had been created with the other type between the screening query and
    # the write: points_ingest raises, and the write is redone without it.
    Metric.objects.create(name="busy", type="counter")
    monkeypatch.setattr("metrics.services._existing_types", lambda wanted: {})
    now_ms = int(time.time() * 1000)
    body = write_request(
        [({"__name__": "busy"}, [(1.0, now_ms)]), ({"__name__": "calm"}, [(2.0, now_ms)])]
    )

    response = post(live_server.url, raw_key, body)

    assert response.status_code == 400
    assert "'busy' exists with the other type" in response.json()["detail"]
    assert list(MetricPoint.objects.values_list("value", flat=True)) == [2.0]
