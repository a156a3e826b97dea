"""The Prometheus HTTP query API over the real store: answers, names, counters, limits, errors."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import numpy as np
import psycopg
import pytest

from tests.helpers import ingest

pytestmark = pytest.mark.django_db


@pytest.fixture
def reader(make_api_client):
    return make_api_client(scopes=["read"])


@pytest.fixture
def base() -> datetime:
    """A whole hour two hours ago: inside the write window, with whole minutes around it."""
    return datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)


def ok(response) -> dict:
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "success", body
    return body["data"]


def error(response, status: int, error_type: str, word: str = "") -> dict:
    assert response.status_code == status, response.content
    body = response.json()
    assert body["status"] == "error" and body["errorType"] == error_type, body
    assert word in body["error"], body
    return body


def test_grafana_health_check_is_a_form_post_of_one_plus_one(reader):
    data = ok(reader.post("/api/v1/query", {"query": "1+1", "time": "4"}))
    assert data == {"resultType": "scalar", "result": [4.0, "2"]}
    info = ok(reader.get("/api/v1/status/buildinfo"))
    assert "version" in info and "features" not in info


def test_a_value_metric_reads_back_under_its_promql_name_and_its_stored_name(reader, base):
    s = base.timestamp()
    ingest("value", "http.latency", (0.25, base + timedelta(seconds=7), {"route": "/a"}))
    ingest("value", "http.latency", (0.5, base + timedelta(seconds=67), {"route": "/a"}))
    at = s + 90
    for query in ("http_latency", '{"http.latency"}', '{__name__="http.latency", route="/a"}'):
        data = ok(reader.get("/api/v1/query", {"query": query, "time": at}))
        assert data["resultType"] == "vector"
        assert data["result"] == [
            {"metric": {"__name__": "http_latency", "route": "/a"}, "value": [at, "0.5"]}
        ], query
    # Five minutes after the last sample it has gone stale (the lookback), as in Prometheus.
    data = ok(reader.get("/api/v1/query", {"query": "http_latency", "time": s + 67 + 301}))
    assert data["result"] == []


def test_counter_increase_and_rate_are_the_exact_sum_of_increments(reader, base):
    s = base.timestamp()
    for k in range(10):  # 1, 2, ... 10 every 15 s from 7.5 s past the hour
        ingest(
            "counter", "jobs.done", (k + 1, base + timedelta(seconds=7.5 + 15 * k), {"queue": "q"})
        )
    data = ok(
        reader.post(
            "/api/v1/query_range",
            {"query": "increase(jobs_done[1m])", "start": s + 60, "end": s + 180, "step": "60"},
        )
    )
    assert data["resultType"] == "matrix"
    (series,) = data["result"]
    assert series["metric"] == {"queue": "q"}
    # (0, 60]: 1+2+3+4; (60, 120]: 5+6+7+8; (120, 180]: 9+10.
    assert series["values"] == [[s + 60, "10"], [s + 120, "26"], [s + 180, "19"]]
    rate = ok(reader.get("/api/v1/query", {"query": "rate(jobs_done[1m])", "time": s + 120}))
    assert rate["result"][0]["value"][1] == str(26 / 60)
    # The counter itself is its running total since the oldest data held.
    total = ok(reader.get("/api/v1/query", {"query": "jobs_done", "time": s + 180}))
    assert total["result"][0]["value"][1] == "55"


def test_aggregation_and_matching_over_stored_series(reader, base):
    s = base.timestamp()
    for route, value in (("/a", 1.0), ("/b", 3.0)):
        ingest(
            "value",
            "queue.depth",
            (value, base + timedelta(seconds=30), {"route": route, "env": "prod"}),
        )
    ingest("value", "queue.limit", (8.0, base + timedelta(seconds=30), {"env": "prod"}))
    query = "sum by (env) (queue_depth) / on (env) queue_limit"
    data = ok(reader.get("/api/v1/query", {"query": query, "time": s + 60}))
    assert data["result"] == [{"metric": {"env": "prod"}, "value": [s + 60, "0.5"]}]
    data = ok(
        reader.get("/api/v1/query", {"query": 'queue_depth{route=~"/(a|c)"}', "time": s + 60})
    )
    assert [r["metric"]["route"] for r in data["result"]] == ["/a"]


def test_series_labels_values_and_metadata_list_what_exists(reader, base):
    ingest(
        "value", "disk.free", (1.0, base + timedelta(seconds=5), {"host": "h1", "dev.name": "sda"})
    )
    ingest("counter", "disk.writes", (1.0, base + timedelta(seconds=5), {"host": "h2"}))
    series = ok(reader.get("/api/v1/series", {"match[]": "disk_free"}))
    assert series == [{"__name__": "disk_free", "dev_name": "sda", "host": "h1"}]
    labels = ok(reader.post("/api/v1/labels", {"match[]": ['{__name__=~"disk_.*"}']}))
    assert labels == ["__name__", "dev_name", "host"]
    assert ok(reader.get("/api/v1/label/host/values")) == ["h1", "h2"]
    assert "disk_writes" in ok(reader.get("/api/v1/label/__name__/values"))
    metadata = ok(reader.get("/api/v1/metadata"))
    assert metadata["disk_writes"] == [{"type": "counter", "help": "", "unit": ""}]
    assert metadata["disk_free"] == [{"type": "gauge", "help": "", "unit": ""}]
    error(reader.get("/api/v1/series"), 400, "bad_data", "match[]")


def test_a_key_with_namespaces_sees_only_its_metrics_everywhere(make_api_client, base):
    team = make_api_client(scopes=["read"], namespaces=["disk."])
    at = base.timestamp() + 30
    ingest("value", "disk.free", (1.0, base + timedelta(seconds=5), {"host": "h1"}))
    ingest("value", "payroll.total", (9.0, base + timedelta(seconds=5), {"secret": "s"}))
    everything = '{__name__=~".+"}'

    def names(result: list) -> set[str]:
        return {r["metric"]["__name__"] for r in result}

    query = ok(team.get("/api/v1/query", {"query": everything, "time": at}))
    assert names(query["result"]) == {"disk_free"}
    for hidden in ("payroll_total", '{"payroll.total"}', "sum(payroll_total)"):
        assert ok(team.get("/api/v1/query", {"query": hidden, "time": at}))["result"] == []
    ranged = ok(
        team.get(
            "/api/v1/query_range", {"query": everything, "start": at, "end": at + 60, "step": 30}
        )
    )
    assert names(ranged["result"]) == {"disk_free"}
    series = ok(team.get("/api/v1/series", {"match[]": everything}))
    assert [s["__name__"] for s in series] == ["disk_free"]
    assert ok(team.get("/api/v1/series", {"match[]": "payroll_total"})) == []
    assert ok(team.get("/api/v1/labels")) == ["__name__", "host"]
    assert ok(team.get("/api/v1/label/__name__/values")) == ["disk_free"]
    assert ok(team.get("/api/v1/label/secret/values")) == []
    assert set(ok(team.get("/api/v1/metadata"))) == {"disk_free"}
    assert ok(team.get("/api/v1/metadata", {"metric": "payroll_total"})) == {}
    # A key without namespaces sees both.
    everyone = make_api_client(scopes=["read"])
    query = ok(everyone.get("/api/v1/query", {"query": everything, "time": at}))
    assert names(query["result"]) == {"disk_free", "payroll_total"}


def test_exemplars_answer_empty_in_prometheus_shape(reader):
    assert ok(reader.get("/api/v1/query_exemplars")) == []


@pytest.mark.parametrize(
    ("params", "word"),
    [
        ({"query": "sum(", "start": "0", "end": "60", "step": "15"}, "parse error"),
        ({"query": "up", "start": "60", "end": "0", "step": "15"}, "end timestamp"),
        ({"query": "up", "start": "0", "end": "60", "step": "0"}, "zero or negative"),
        ({"query": "up", "start": "0", "end": "60", "step": "-1"}, "zero or negative"),
        ({"query": "up", "start": "0", "end": "11001", "step": "1"}, "11,000 points"),
        ({"query": "up", "start": "soon", "end": "60", "step": "15"}, '"start"'),
        ({"query": "up", "start": "0", "end": "60", "step": "fast"}, '"step"'),
        ({"query": "", "start": "0", "end": "60", "step": "15"}, '"query"'),
        ({"query": 'x{a=~"("}', "start": "0", "end": "60", "step": "15"}, ""),
        ({"query": "up[5m]", "start": "0", "end": "60", "step": "15"}, "range vector"),
    ],
)
def test_bad_queries_are_400_bad_data(reader, params, word):
    error(reader.get("/api/v1/query_range", params), 400, "bad_data", word)


def test_the_points_limit_is_exactly_eleven_thousand(reader):
    ok(reader.get("/api/v1/query_range", {"query": "1", "start": "0", "end": "11000", "step": "1"}))


def test_unsupported_functions_are_422_naming_them(reader):
    body = error(
        reader.get("/api/v1/query", {"query": "histogram_count(x)", "time": "100"}),
        422,
        "execution",
    )
    assert "histogram_count" in body["error"]


def test_too_many_series_is_422_with_the_limit(reader, base, settings):
    settings.PROMQL_MAX_SERIES = 2
    for host in ("a", "b", "c"):
        ingest("value", "cpu.load", (1.0, base, {"host": host}))
    error(
        reader.get("/api/v1/query", {"query": "cpu_load", "time": base.timestamp()}),
        422,
        "execution",
        "2 series",
    )
    settings.PROMQL_MAX_SERIES = 3
    assert (
        len(
            ok(reader.get("/api/v1/query", {"query": "cpu_load", "time": base.timestamp()}))[
                "result"
            ]
        )
        == 3
    )


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "table",
    [
        "metrics",  # the series lookup, through Django's cursors
        "metric_rollup_hour",  # the kept hours' counts, through the binary reads
    ],
)
def test_a_query_past_its_timeout_is_503_timeout_and_frees_its_connection(
    reader, base, settings, table
):
    """A read that waits past PROMQL_TIMEOUT_SECONDS (here on a lock another session holds) is
    cancelled by the server: a 503 `timeout`, and the next query on the connection answers."""
    from django.db import connection

    settings.PROMQL_TIMEOUT_SECONDS = 1
    ingest("value", "cpu.load", (1.0, base + timedelta(seconds=30), {"host": "a"}))
    params = {
        "query": "cpu_load",
        "start": (base - timedelta(hours=1)).timestamp(),
        "end": (base + timedelta(hours=2)).timestamp(),
        "step": "60",
    }

    def session_settings() -> tuple:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT current_setting('statement_timeout'),"
                " current_setting('transaction_read_only')"
            )
            return cursor.fetchone()

    before = session_settings()
    with psycopg.connect(**connection.get_connection_params()) as holder:
        holder.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")  # until the block's end
        error(reader.post("/api/v1/query_range", params), 503, "timeout", "timed out")
    data = ok(reader.post("/api/v1/query_range", params))
    assert [s["metric"] for s in data["result"]] == [{"__name__": "cpu_load", "host": "a"}]
    # The query's settings ended with its round trips: the connection is as it was, out of any
    # transaction, writable, without the query's timeout.
    assert session_settings() == before and before[1] == "off"
    assert connection.connection.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


def test_keys_are_taken_as_bearer_and_as_basic_password_and_refused_without_read(
    make_api_client, client_anon, base
):
    writer = make_api_client(scopes=["write"])
    error(writer.get("/api/v1/query", {"query": "1", "time": "1"}), 403, "forbidden")
    error(client_anon.get("/api/v1/query", {"query": "1", "time": "1"}), 401, "unauthorized")
    reader = make_api_client(scopes=["read"])
    raw = reader.raw_key
    client_anon.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    ok(client_anon.get("/api/v1/query", {"query": "1", "time": "1"}))
    basic = base64.b64encode(f"grafana:{raw}".encode()).decode()
    client_anon.credentials(HTTP_AUTHORIZATION=f"Basic {basic}")
    ok(client_anon.get("/api/v1/query", {"query": "1", "time": "1"}))


@pytest.mark.parametrize(
    "name", ["count_over_time", "sum_over_time", "avg_over_time", "min_over_time", "max_over_time"]
)
def test_rollup_windows_equal_the_raw_points_with_points_on_window_edges(base, name):
    """A range function read from rollups answers exactly what the raw points answer, also for
    points exactly on a window's edges (in the window at its end, out of it at its start), for
    every series of a selector at once (series with points in different windows, and one
    whose points all lie after the first windows)."""
    from promql.evaluator import LabelMatcher
    from promql.selectors import DatabaseSource
    from promql.windows import range_apply

    offsets = [0, 30, 60, 61.5, 120, 179.9, 180, 240, 299, 300, 360]
    shifts = {"a": 0, "b": 60, "c": 250}
    for host, shift in shifts.items():
        for k, seconds in enumerate(offsets):
            at = base + timedelta(seconds=seconds + shift)
            tags = {"host": host}
            ingest("value", "edge.gauge", (float((k + shift) * 7 % 5 - 2), at, tags))
            ingest("counter", "edge.count", (float(k + 1 + shift), at, tags))
    s = int(base.timestamp() * 1000)
    ends = np.arange(s, s + 7 * 60_000, 60_000, dtype=np.int64)
    for metric, function in (
        ("edge_gauge", name),
        ("edge_count", "increase"),
        ("edge_count", "rate"),
    ):
        if metric == "edge_count" and name != "count_over_time":
            continue
        matchers = [LabelMatcher("__name__", "=", metric)]
        source = DatabaseSource()
        pushed = source.windows(matchers, function, ends, 120_000)
        if function in ("min_over_time", "max_over_time"):
            # A point on a window's open start may be its bucket's extreme: only the raw
            # points can tell, so the rollups decline.
            assert pushed is None
            continue
        assert pushed is not None, function
        raws = source.select(matchers, int(ends.min()) - 120_000, int(ends.max()))
        assert [labels for labels, _, _ in pushed] == [raw.labels for raw in raws]
        for raw, (_, pushed_values, pushed_present) in zip(raws, pushed, strict=True):
            if raw.counter:
                raw.values = raw.base + np.cumsum(raw.values)
            values, present = range_apply(function, raw, ends, 120_000, steps=ends)
            assert (pushed_present == present).all(), (function, raw.labels)
            assert np.allclose(pushed_values[present], values[present]), (
                function,
                raw.labels,
                pushed_values,
                values,
            )


class _RawOnly:
    """The database source with its rollup shortcuts hidden: what the raw points answer."""

    def __init__(self, source) -> None:
        self.select = source.select


@pytest.mark.parametrize("kind", ["value", "counter"])
def test_instant_selectors_from_rollups_equal_the_raw_points(base, kind):
    """At steps of whole quarter hours an instant selector reads the rollups' latest points (and a
    counter's bucket sums); the answer is the raw points' to the bit, points on steps included,
    gaps longer than the lookback included."""
    import promql_parser as pp

    from promql.evaluator import Evaluator, LabelMatcher
    from promql.selectors import DatabaseSource

    offsets = [5, 59.5, 60, 125, 180, 181, 600, 660.25, 900, 1500, 1505, 1560, 1800, 2700.5]
    for k, seconds in enumerate(offsets):
        ingest(
            kind, "step.metric", (float(k % 4 + 1), base + timedelta(seconds=seconds), {"k": "v"})
        )
    s = int(base.timestamp() * 1000)
    for step in (900_000, 1800_000):
        answers = []
        for source in (DatabaseSource(), _RawOnly(DatabaseSource())):
            evaluator = Evaluator(source, start_ms=s, end_ms=s + 3600_000, step_ms=step)
            answers.append(evaluator.evaluate(pp.parse("step_metric")))
        pushed, raw = answers
        assert pushed.labels == raw.labels and len(raw.labels) == 1
        assert (pushed.present == raw.present).all()
        assert (pushed.values[raw.present] == raw.values[raw.present]).all()
        assert (pushed.times[raw.present] == raw.times[raw.present]).all()
        assert not raw.present.all() and raw.present.any()  # gaps longer than the lookback show
        refs = np.arange(s, s + 3600_001, step, dtype=np.int64)
        matchers = [LabelMatcher("__name__", "=", "step_metric")]
        assert DatabaseSource().instants(matchers, refs, 300_000) is not None  # rollups read
