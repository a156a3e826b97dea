"""Keys bound to namespaces, on every route of the service (OWASP API1).

The routes are read from the URL configuration, and each must have a rule in `RULES`: a route
added later without one fails `test_every_route_keeps_to_the_namespaces`. Every route is
driven with two keys whose namespaces do not overlap (`team_a.` and `team_b.`): inside, the
usual answer; outside, 403 on JSON writes, the protocol's own refusal on protocol writes, the
404 of a metric that does not exist on reads (same status, same body, same queries), nothing
stored, nothing leaked in lists or counts.
"""

from __future__ import annotations

import json
import time
import timeit
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework.test import APIClient

from apikeys.namespaces import NAMESPACES_MAX, namespaces_outside
from idempotency.models import IdempotencyRecord
from metrics.models import IngestBatch, Metric, MetricPoint
from tests.helpers import assert_problem, ingest, post, post_async
from tests.protocols.clients import write_request

pytestmark = pytest.mark.django_db

INSIDE = "team_a."
OUTSIDE = "team_b."


def routes() -> list[str]:
    """Every route of the URL configuration, as its pattern; the admin's as one ("admin/")."""

    def walk(patterns: list, prefix: str) -> Iterator[str]:
        for pattern in patterns:
            route = prefix + str(pattern.pattern)
            if isinstance(pattern, URLResolver):
                if route == "admin/":
                    yield route  # the admin site: staff sessions, never a key
                else:
                    yield from walk(pattern.url_patterns, route)
            elif isinstance(pattern, URLPattern):
                yield route

    return sorted(set(walk(get_resolver().url_patterns, "")))


@dataclass
class World:
    """Two keys of disjoint namespaces (admin scope too), and a metric of each."""

    a: APIClient  # team_a.*
    b: APIClient  # team_b.*
    when: datetime

    def metric_names(self) -> set[str]:
        return set(Metric.objects.values_list("name", flat=True))

    def points_of(self, name: str) -> int:
        return MetricPoint.objects.filter(metric__name=name).count()


@pytest.fixture
def world(make_api_client) -> World:
    scopes = ["read", "write", "admin"]
    a = make_api_client(scopes=scopes, name="team-a", namespaces=[INSIDE])
    b = make_api_client(scopes=scopes, name="team-b", namespaces=[OUTSIDE])
    when = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=30)
    for name in ("team_a.cpu", "team_b.cpu"):
        ingest("value", name, (1.0, when, {"host": name.split(".")[0]}))
    ingest("value", "team_b.secret", (2.0, when, {"b_only": "x"}))
    return World(a, b, when)


def assert_same_404(outside, missing, outside_name: str, missing_name: str) -> None:
    """`outside` (a metric that exists, outside the key) answers as `missing` (one that does not
    exist) does, but for the name itself."""
    body = assert_problem(outside, 404, "metric-not-found")
    other = assert_problem(missing, 404, "metric-not-found")
    assert json.loads(json.dumps(other).replace(missing_name, outside_name)) == body
    assert outside["Content-Type"] == missing["Content-Type"]


def queries_of(call: Callable[[], object]) -> list[str]:
    with CaptureQueriesContext(connection) as captured:
        call()
    return [q["sql"] for q in captured.captured_queries]


def assert_no_oracle(w: World, request: Callable[[APIClient, str], object]) -> None:
    """An existing metric outside answers exactly as a missing one outside, in the same queries,
    and as a missing one inside, in body; inside, the usual 200."""
    existing = request(w.a, "team_b.cpu")
    missing = request(w.a, "team_b.nothing")
    assert_same_404(existing, missing, "team_b.cpu", "team_b.nothing")
    assert_same_404(existing, request(w.a, "team_a.nothing"), "team_b.cpu", "team_a.nothing")
    assert queries_of(lambda: request(w.a, "team_b.cpu")) == queries_of(
        lambda: request(w.a, "team_b.nothing")
    )
    assert request(w.a, "team_a.cpu").status_code == 200
    assert request(w.b, "team_b.cpu").status_code == 200


# --- the rules ----------------------------------------------------------------------------------


def _write_single(path: str, body: dict) -> Callable[[World], None]:
    def check(w: World) -> None:
        inside = post(w.a, path, {**body, "name": "team_a.new"})
        assert inside.status_code == 201, inside.content
        refused = post(w.a, path, {**body, "name": "team_b.new"}, **{"Idempotency-Key": "k1"})
        problem = assert_problem(refused, 403, "namespace-forbidden", "'team_b.new'")
        assert problem["errors"] == [
            {"field": "name", "message": "is outside this API key's namespaces"}
        ]
        queued = post_async(w.a, path, {**body, "name": "team_b.new"})
        assert_problem(queued, 403, "namespace-forbidden")
        assert not IngestBatch.objects.exists()
        assert "team_b.new" not in w.metric_names()
        # The refusal did not use the Idempotency-Key up.
        assert not IdempotencyRecord.objects.filter(key="k1").exists()
        again = post(w.a, path, {**body, "name": "team_a.new"}, **{"Idempotency-Key": "k1"})
        assert again.status_code == 201, again.content
        # Another key sending the same Idempotency-Key gets its own answer, not a's.
        other = post(w.b, path, {**body, "name": "team_a.new"}, **{"Idempotency-Key": "k1"})
        assert_problem(other, 403, "namespace-forbidden")
        assert "Idempotent-Replayed" not in other
        # The route also reads the metric named like it ("counter"): outside both keys.
        reserved = path.rsplit("/", 1)[1]
        assert_same_404(w.a.get(path), w.a.get("/api/metrics/team_b.none"), reserved, "team_b.none")
        assert_same_404(w.a.delete(path), w.a.delete("/api/metrics/x.y"), reserved, "x.y")

    return check


def _write_batch(w: World) -> None:
    def point(name: str) -> dict:
        return {"name": name, "type": "value", "value": 1}

    names = ["team_a.x", "team_b.x", "team_a.y", "team_b.y", "payroll.z"]
    refused = post(w.a, "/api/metrics/batch", {"points": [point(n) for n in names]})
    problem = assert_problem(refused, 403, "namespace-forbidden", "team_b.x")
    assert [(e["index"], e["field"]) for e in problem["errors"]] == [
        (1, "name"),
        (3, "name"),
        (4, "name"),
    ]
    assert not {"team_a.x", "team_a.y", "team_b.x"} & w.metric_names()  # all or nothing
    queued = post_async(w.a, "/api/metrics/batch", {"points": [point(n) for n in names]})
    assert_problem(queued, 403, "namespace-forbidden")
    assert not IngestBatch.objects.exists()
    inside = post(w.a, "/api/metrics/batch", {"points": [point("team_a.x"), point("team_a.y")]})
    assert inside.status_code == 201 and inside.json() == {"processed": 2}
    assert w.points_of("team_a.x") == 1


def _batch_status(w: World) -> None:
    queued = post_async(
        w.a, "/api/metrics/batch", {"points": [{"name": "team_a.q", "type": "value", "value": 1}]}
    )
    assert queued.status_code == 202, queued.content
    url = queued.json()["status_url"]
    assert w.a.get(url).status_code == 200
    theirs = w.b.get(url)
    missing = w.b.get("/api/batches/999999999")
    assert_problem(theirs, 404, "not-found")
    assert theirs.json() == json.loads(
        json.dumps(missing.json()).replace("999999999", url.rsplit("/", 1)[1])
    )


def _metric_query(w: World) -> None:
    assert_no_oracle(w, lambda c, name: c.get(f"/api/metrics/{name}", {"aggregation": "count"}))


def _metric_delete_and_query(w: World) -> None:
    _metric_query(w)
    existing = w.a.delete("/api/metrics/team_b.cpu")
    missing = w.a.delete("/api/metrics/team_b.nothing")
    assert_same_404(existing, missing, "team_b.cpu", "team_b.nothing")
    assert queries_of(lambda: w.a.delete("/api/metrics/team_b.cpu")) == queries_of(
        lambda: w.a.delete("/api/metrics/team_b.nothing")
    )
    assert "team_b.cpu" in w.metric_names()
    assert w.a.delete("/api/metrics/team_a.cpu").status_code == 204
    assert "team_a.cpu" not in w.metric_names()


def _series_list(w: World) -> None:
    assert_no_oracle(w, lambda c, name: c.get("/api/series", {"metric": name}))


def _tag_list(w: World) -> None:
    assert_no_oracle(w, lambda c, name: c.get("/api/tags", {"metric": name}))


def _metric_list(w: World) -> None:
    for name in ("aaa.first", "team_a.b", "team_a.c", "team_a_but_not.dot", "zzz.last"):
        ingest("value", name, (1.0, w.when))

    def walk(client: APIClient, **params) -> list[dict]:
        rows, response = [], client.get("/api/metrics", {"limit": 1, **params})
        while True:
            assert response.status_code == 200, response.content
            rows += response.json()["results"]
            if response.json()["next"] is None:
                return rows
            response = client.get(response.json()["next"])

    assert [r["name"] for r in walk(w.a)] == ["team_a.b", "team_a.c", "team_a.cpu"]
    assert [r["series"] for r in walk(w.a) if r["name"] == "team_a.cpu"] == [1]
    assert [r["name"] for r in walk(w.b)] == ["team_b.cpu", "team_b.secret"]
    assert walk(w.a, prefix="team_b.") == [] and walk(w.a, search="secret") == []


def _self_monitoring(w: World, make_api_client) -> None:
    assert_problem(w.a.get("/metrics"), 403, "namespace-forbidden", "glowing_fiesta.")
    assert_problem(w.b.get("/metrics"), 403, "namespace-forbidden")
    for namespaces in ([], ["glowing_fiesta."], ["glowing"], ["team_a.", "glowing_fiesta."]):
        scraper = make_api_client(scopes=["read"], namespaces=namespaces)
        response = scraper.get("/metrics")
        assert response.status_code == 200, namespaces
        assert b"glowing_fiesta_ingestion_failures_total" in response.content
    # The own figures, as metrics, are outside every key not covering glowing_fiesta.
    ingest("counter", "glowing_fiesta.requests", (1.0, w.when))
    assert_same_404(
        w.a.get("/api/metrics/glowing_fiesta.requests"),
        w.a.get("/api/metrics/glowing_fiesta.none"),
        "glowing_fiesta.requests",
        "glowing_fiesta.none",
    )


def _influx(path: str) -> Callable[[World], None]:
    def check(w: World) -> None:
        lines = b"team_a,host=h cpu=1\nteam_b,host=h cpu=2\nteam_a,host=h mem=3\n"
        response = w.a.post(path, lines, content_type="text/plain")
        assert response.status_code == 422, response.content
        message = response.json()["message" if path != "/write" else "error"]
        assert "line 2: metric 'team_b.cpu' is outside this token's namespaces" in message
        assert w.points_of("team_a.cpu") == 2 and w.points_of("team_a.mem") == 1
        assert w.points_of("team_b.cpu") == 1  # the fixture's, nothing more
        assert w.a.post(path, b"team_a cpu=4\n", content_type="text/plain").status_code == 204

    return check


def _otlp(w: World) -> None:
    now_ns = str(time.time_ns())

    def gauge(name: str) -> dict:
        return {"name": name, "gauge": {"dataPoints": [{"asDouble": 1.5, "timeUnixNano": now_ns}]}}

    def export(*names: str) -> dict:
        metrics = [gauge(n) for n in names]
        return {"resourceMetrics": [{"scopeMetrics": [{"metrics": metrics}]}]}

    response = post(w.a, "/v1/metrics", export("team_a.g", "team_b.g", "team_b.h"))
    assert response.status_code == 200, response.content
    partial = response.json()["partialSuccess"]
    assert partial["rejectedDataPoints"] == "2"
    assert "'team_b.g' is outside this key's namespaces" in partial["errorMessage"]
    assert w.points_of("team_a.g") == 1
    assert not {"team_b.g", "team_b.h"} & w.metric_names()
    assert post(w.b, "/v1/metrics", export("team_b.g")).json().get("partialSuccess") is None


def _remote_write(w: World) -> None:
    now_ms = int(time.time() * 1000)

    def send(client: APIClient, *names: str):
        body = write_request([({"__name__": n, "job": "j"}, [(4.0, now_ms)]) for n in names])
        return client.post(
            "/api/v1/write",
            body,
            content_type="application/x-protobuf",
            HTTP_CONTENT_ENCODING="snappy",
            HTTP_X_PROMETHEUS_REMOTE_WRITE_VERSION="0.1.0",
        )

    refused = send(w.a, "team_a.up", "team_b.up")
    problem = assert_problem(refused, 400, "invalid-input", "'team_b.up' is outside")
    assert problem["stored"] == 1 and problem["refused_series"] == 1
    assert w.points_of("team_a.up") == 1 and "team_b.up" not in w.metric_names()
    assert send(w.b, "team_b.up").status_code == 204


def _prom(client: APIClient, path: str, params: dict | None = None) -> object:
    response = client.get(path, params or {})
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "success"
    return body["data"]


def _promql_query(path: str) -> Callable[[World], None]:
    def check(w: World) -> None:
        at = w.when.timestamp() + 30
        params = {"query": '{__name__=~"team.*"}', "time": at}
        if path.endswith("query_range"):
            params = {"query": params["query"], "start": at, "end": at + 60, "step": 30}

        def names(client: APIClient, query: str | None = None) -> set[str]:
            data = _prom(client, path, {**params, **({"query": query} if query else {})})
            return {r["metric"]["__name__"] for r in data["result"]}

        assert names(w.a) == {"team_a_cpu"}
        assert names(w.b) == {"team_b_cpu", "team_b_secret"}
        assert names(w.a, "team_b_cpu") == set()
        assert names(w.a, '{"team_b.secret"}') == set()
        assert names(w.a, "team_a_cpu") == {"team_a_cpu"}

    return check


def _promql_series(w: World) -> None:
    data = _prom(w.a, "/api/v1/series", {"match[]": '{__name__=~".+"}'})
    assert {s["__name__"] for s in data} == {"team_a_cpu"}
    assert _prom(w.a, "/api/v1/series", {"match[]": "team_b_secret"}) == []


def _promql_labels(w: World) -> None:
    assert "b_only" not in _prom(w.a, "/api/v1/labels")
    assert "b_only" in _prom(w.b, "/api/v1/labels")


def _promql_label_values(w: World) -> None:
    assert _prom(w.a, "/api/v1/label/__name__/values") == ["team_a_cpu"]
    assert _prom(w.a, "/api/v1/label/b_only/values") == []
    assert _prom(w.b, "/api/v1/label/b_only/values") == ["x"]


def _promql_metadata(w: World) -> None:
    assert set(_prom(w.a, "/api/v1/metadata")) == {"team_a_cpu"}
    assert _prom(w.a, "/api/v1/metadata", {"metric": "team_b_cpu"}) == {}
    assert set(_prom(w.b, "/api/v1/metadata")) == {"team_b_cpu", "team_b_secret"}


def _same_for_both(path: str, status: int = 200) -> Callable[[World], None]:
    """No metric involved: the answer does not depend on the key's namespaces."""

    def check(w: World) -> None:
        first, second = w.a.get(path), w.b.get(path)
        assert first.status_code == second.status_code == status, first.content
        if first.get("Content-Type", "").startswith("application/json"):
            assert first.json() == second.json()

    return check


def _key_me(w: World) -> None:
    assert w.a.get("/api/keys/me").json()["namespaces"] == [INSIDE]
    assert w.b.get("/api/keys/me").json()["namespaces"] == [OUTSIDE]


def _admin(w: World) -> None:
    """The admin (its chart JSON included) is for staff sessions: a key opens nothing there."""
    metric = Metric.objects.get(name="team_b.cpu")
    for path in ("/admin/", f"/admin/metrics/metric/{metric.pk}/chart/data/"):
        response = w.a.get(path)
        assert response.status_code == 302 and "/admin/login/" in response["Location"]


WRITE, READ, LIST, DELETE, BATCH, SELF, PROMQL, NONE, ADMIN = (
    "write",
    "metric read",
    "list",
    "metric read and delete",
    "batch status",
    "self-monitoring",
    "query API",
    "no metric involved",
    "staff session only",
)

# route pattern -> (the namespace rule that applies, how it is driven)
RULES: dict[str, tuple[str, Callable[..., None]]] = {
    "healthz": (NONE, _same_for_both("/healthz")),
    "readyz": (NONE, _same_for_both("/readyz")),
    "favicon.ico": (NONE, _same_for_both("/favicon.ico", 301)),
    "admin/login/": (NONE, _same_for_both("/admin/login/")),
    "admin/": (ADMIN, _admin),
    "api/schema/": (NONE, _same_for_both("/api/schema/")),
    "api/docs/": (NONE, _same_for_both("/api/docs/")),
    "api/redoc/": (NONE, _same_for_both("/api/redoc/")),
    "api/keys/me": (NONE, _key_me),
    "metrics": (SELF, _self_monitoring),
    "write": (WRITE, _influx("/write?db=x")),
    "api/v2/write": (WRITE, _influx("/api/v2/write?org=o&bucket=b")),
    "v1/metrics": (WRITE, _otlp),
    "api/v1/write": (WRITE, _remote_write),
    "api/metrics/counter": (WRITE, _write_single("/api/metrics/counter", {})),
    "api/metrics/value": (WRITE, _write_single("/api/metrics/value", {"value": 2})),
    "api/metrics/batch": (WRITE, _write_batch),
    "api/batches/<int:batch_id>": (BATCH, _batch_status),
    "api/metrics/<path:name>": (DELETE, _metric_delete_and_query),
    "api/metrics": (LIST, _metric_list),
    "api/series": (READ, _series_list),
    "api/tags": (READ, _tag_list),
    "api/v1/query": (PROMQL, _promql_query("/api/v1/query")),
    "api/v1/query_range": (PROMQL, _promql_query("/api/v1/query_range")),
    "api/v1/series": (PROMQL, _promql_series),
    "api/v1/labels": (PROMQL, _promql_labels),
    "api/v1/label/<str:name>/values": (PROMQL, _promql_label_values),
    "api/v1/metadata": (PROMQL, _promql_metadata),
    "api/v1/status/buildinfo": (NONE, _same_for_both("/api/v1/status/buildinfo")),
    "api/v1/rules": (NONE, _same_for_both("/api/v1/rules")),
    "api/v1/alerts": (NONE, _same_for_both("/api/v1/alerts")),
    "api/v1/query_exemplars": (
        PROMQL,
        _same_for_both("/api/v1/query_exemplars?query=team_b_cpu&start=0&end=1"),
    ),
}


@pytest.mark.parametrize("route", routes())
def test_every_route_keeps_to_the_namespaces(route, world, make_api_client):
    if route not in RULES:
        pytest.fail(f"route {route!r} has no namespace rule: add it to RULES in {__name__}")
    _, check = RULES[route]
    if check is _self_monitoring:
        check(world, make_api_client)
    else:
        check(world)


def test_every_rule_names_a_route_that_exists():
    assert set(RULES) <= set(routes())


def test_a_key_without_namespaces_reaches_every_metric(make_api_client, world):
    everyone = make_api_client()
    names = {r["name"] for r in everyone.get("/api/metrics").json()["results"]}
    assert {"team_a.cpu", "team_b.cpu", "team_b.secret"} <= names
    assert everyone.get("/api/metrics/team_b.cpu", {"aggregation": "count"}).status_code == 200


def test_checking_1000_points_against_20_prefixes_costs_microseconds():
    prefixes = tuple(f"team{i:02}.service." for i in range(NAMESPACES_MAX))
    names = [f"team19.service.metric{i % 50}" for i in range(1000)]  # the last prefix matches
    best = min(timeit.repeat(lambda: namespaces_outside(prefixes, names), number=20, repeat=5))
    per_batch = best / 20
    assert namespaces_outside(prefixes, names) == []
    assert per_batch < 0.002, f"{per_batch * 1e6:.0f} µs per 1000-point batch"
