"""Hostile input on every channel: refused with a 4xx problem, or stored verbatim and found again.

SQL metacharacters, NUL, a lone surrogate and 10 KB strings in the metric name, tag keys and
values, the tag= filter, group_by, tz, interval, the Idempotency-Key and the batch id. Never a
500 (the test client re-raises a server error), and the tables are intact afterwards.
"""

import json
from urllib.parse import quote

import pytest
from django.db import connection

from tests.helpers import PROBLEM

pytestmark = pytest.mark.django_db

SQL = "x'); DROP TABLE metrics; --"
NUL = "a\x00b"
SURROGATE = "a\ud800b"
HUGE = "k" * 10_240
HOSTILE = [SQL, NUL, SURROGATE, HUGE]
IDS = ["sql", "nul", "surrogate", "10kb"]


def _post(client, path: str, body, **headers):
    # ensure_ascii: a lone surrogate travels as the JSON escape \ud800, as a client would send it.
    return client.post(path, json.dumps(body), content_type="application/json", headers=headers)


def _refused(response, status: int = 400) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"] == PROBLEM
    return response.json()


@pytest.fixture(autouse=True)
def _schema_intact():
    yield
    with connection.cursor() as cursor:
        tables = set(connection.introspection.table_names(cursor))
    assert {"metrics", "series", "metric_points", "api_keys", "idempotency_keys"} <= tables


@pytest.mark.parametrize("value", HOSTILE, ids=IDS)
def test_metric_name(api_client, value):
    for path in ("/api/metrics/counter", "/api/metrics/value"):
        _refused(_post(api_client, path, {"name": value, "value": 1}))
    _refused(
        _post(api_client, "/api/metrics/batch", {"points": [{"type": "counter", "name": value}]})
    )
    # In the query path: no metric can bear such a name.
    _refused(api_client.get("/api/metrics/" + quote(value, errors="surrogatepass")), 404)


@pytest.mark.parametrize("value", HOSTILE, ids=IDS)
def test_tag_key(api_client, value):
    _refused(_post(api_client, "/api/metrics/counter", {"name": "hostile", "tags": {value: "v"}}))


@pytest.mark.parametrize(
    "value", [NUL, SURROGATE, HUGE, "a\nb", "a\u2028b"], ids=[*IDS[1:], "newline", "separator"]
)
def test_tag_value_that_breaks_the_rules_is_refused(api_client, value):
    _refused(_post(api_client, "/api/metrics/counter", {"name": "hostile", "tags": {"k": value}}))


@pytest.mark.parametrize(
    "value", [SQL, "Robert'); DROP TABLE series;--", "%s %% $1 \\x00", "日本語 🚀 é"]
)
def test_tag_value_with_sql_metacharacters_is_stored_verbatim_and_found_again(api_client, value):
    response = _post(api_client, "/api/metrics/counter", {"name": "hostile", "tags": {"k": value}})
    assert response.status_code == 201, response.content
    assert response.json()["tags"] == {"k": value}
    found = api_client.get("/api/metrics/hostile", {"tag": f"k:{value}", "interval": "day"})
    assert found.status_code == 200, found.content
    assert sum(b["value"] or 0 for b in found.json()["buckets"]) == 1
    grouped = api_client.get("/api/metrics/hostile", {"group_by": "k", "interval": "day"})
    assert [g["tags"] for g in grouped.json()["groups"]] == [{"k": value}]


@pytest.mark.parametrize(
    "value",
    ["k:'; DROP TABLE series; --", f"k:{NUL}", f"k:{HUGE}", HUGE, f"{NUL}:v", "k'; --:v"],
    ids=["sql-value", "nul-value", "10kb-value", "10kb", "nul-key", "sql-key"],
)
def test_tag_filter(api_client, value):
    _post(api_client, "/api/metrics/counter", {"name": "hostile"})
    if value.startswith("k:'"):
        # A well-formed filter whose value is SQL: it simply matches nothing.
        response = api_client.get("/api/metrics/hostile", {"tag": value})
        assert response.status_code == 200
        assert {b["value"] for b in response.json()["buckets"]} == {0}
        return
    _refused(api_client.get("/api/metrics/hostile?tag=" + quote(value)))


def test_tag_filter_with_invalid_utf8_is_read_with_replacement_not_a_500(api_client):
    _post(api_client, "/api/metrics/counter", {"name": "hostile"})
    response = api_client.get("/api/metrics/hostile?tag=k:a%ED%A0%80b")
    assert response.status_code == 200


@pytest.mark.parametrize("parameter", ["group_by", "tz", "interval", "aggregation", "fill", "from"])
@pytest.mark.parametrize("value", HOSTILE, ids=IDS)
def test_query_parameters(api_client, parameter, value):
    _post(api_client, "/api/metrics/counter", {"name": "hostile"})
    # A URL carries a lone surrogate as its UTF-8-style bytes, which are not valid UTF-8.
    query = f"{parameter}={quote(value, errors='surrogatepass')}"
    body = _refused(api_client.get(f"/api/metrics/hostile?{query}"))
    assert body["type"].endswith(":invalid-input")


@pytest.mark.parametrize("value", ["../../../etc/passwd", "/etc/localtime", "UTC\n"])
def test_tz_never_names_a_file(api_client, value):
    _post(api_client, "/api/metrics/counter", {"name": "hostile"})
    _refused(api_client.get("/api/metrics/hostile", {"tz": value}))


def test_idempotency_key_with_sql_metacharacters_is_stored_verbatim_and_found_again(api_client):
    key = "k'); DELETE FROM idempotency_keys; --"
    first = _post(
        api_client, "/api/metrics/counter", {"name": "hostile"}, **{"Idempotency-Key": key}
    )
    again = _post(
        api_client, "/api/metrics/counter", {"name": "hostile"}, **{"Idempotency-Key": key}
    )
    assert (first.status_code, again.status_code) == (201, 201)
    assert again["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()


@pytest.mark.parametrize("value", [NUL, SURROGATE, HUGE, "\t"], ids=[*IDS[1:], "tab"])
def test_idempotency_key_that_breaks_the_rules_is_refused(api_client, value):
    response = api_client.post(
        "/api/metrics/counter",
        json.dumps({"name": "hostile"}),
        content_type="application/json",
        HTTP_IDEMPOTENCY_KEY=value,
    )
    _refused(response)


@pytest.mark.parametrize(
    "path",
    [
        "/api/batches/" + quote("1' OR '1'='1"),
        "/api/batches/%00",
        "/api/batches/" + "9" * 10_240,
        "/api/batches/99999999999999999999",
        "/api/batches/-1",
    ],
    ids=["sql", "nul", "10kb", "past-bigint", "negative"],
)
def test_batch_id(api_client, path):
    _refused(api_client.get(path), 404)
