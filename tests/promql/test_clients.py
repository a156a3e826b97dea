"""Real clients of the Prometheus API against the service: promtool (Debian's, the same package
as the reference) and the request sequence of Grafana's Prometheus data source."""

from __future__ import annotations

import json
import math
import subprocess
import time
import urllib.parse
from datetime import UTC, datetime

import pytest

from tests.promql.dataset import dataset_build, dataset_load
from tests.promql.reference import binaries
from tests.security.conftest import HTTPS

pytestmark = [pytest.mark.reference, pytest.mark.server]


def promtool(*args: str) -> str:
    _, tool = binaries() or (None, "promtool")
    done = subprocess.run(  # noqa: S603 - Debian's promtool, our arguments
        [tool, *args], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _sorted_lines(text: str) -> list[str]:
    return sorted(line for line in text.splitlines() if line.strip())


def test_promtool_query_instant_range_series_and_labels_answer_as_the_reference(
    start_gunicorn, api_key, promql_dataset, reference_prometheus
):
    _, raw_key = api_key
    # promtool 2.42 cannot add a header: plain HTTP, the key as the Basic password.
    server = start_gunicorn(SECURE_SSL_REDIRECT="false")
    assert (
        dataset_load(server.url, raw_key, promql_dataset, headers=HTTPS)
        == promql_dataset.point_count()
    )
    ours = f"http://grafana:{raw_key}@{server.host}:{server.port}"
    reference = reference_prometheus.url
    at = str(math.floor(promql_dataset.end / 60) * 60)
    start = str(math.floor(promql_dataset.end / 60) * 60 - 1800)
    for query in (
        'demo_memory_usage_bytes{type="free"}',
        "sum by (instance) (demo_memory_usage_bytes)",
        'max_over_time(demo_temperature_celsius{sensor="cpu"}[10m])',
        "demo_num_cpus * 2 > 9",
    ):
        mine = promtool("query", "instant", "--time", at, ours, query)
        theirs = promtool("query", "instant", "--time", at, reference, query)
        assert _sorted_lines(mine) == _sorted_lines(theirs), query
        assert mine.strip(), query
        mine = promtool(
            "query", "range", "--start", start, "--end", at, "--step", "60s", ours, query
        )
        theirs = promtool(
            "query", "range", "--start", start, "--end", at, "--step", "60s", reference, query
        )
        assert _sorted_lines(mine) == _sorted_lines(theirs), query
    for match in ("demo_num_cpus", '{__name__=~"demo_memory.*", type="free"}'):
        mine = promtool("query", "series", "--match", match, ours)
        theirs = promtool("query", "series", "--match", match, reference)
        assert _sorted_lines(mine) == _sorted_lines(theirs), match
    mine = promtool("query", "labels", ours, "instance")
    theirs = promtool("query", "labels", reference, "instance")
    assert _sorted_lines(mine) == _sorted_lines(theirs)


def test_grafana_data_source_sequence_is_answered_and_parsed(start_gunicorn, api_key):
    """What Grafana's Prometheus data source sends, in its order: save & test, start-up probes,
    the metric browser, a variable, a panel, an alert rule's instant query; GET and POST."""
    _, raw_key = api_key
    server = start_gunicorn()
    small = dataset_build(end=datetime.now(UTC), hours=0.5)
    dataset_load(server.url, raw_key, small, headers=HTTPS)
    now = time.time()
    step = 30
    start, end = math.floor((now - 1800) / step) * step, math.floor(now / step) * step
    auth = {"Authorization": f"Bearer {raw_key}", **HTTPS}
    form = {**auth, "Content-Type": "application/x-www-form-urlencoded"}

    def call(method: str, path: str, params: dict | list | None = None, status: int = 200) -> dict:
        encoded = urllib.parse.urlencode(params or {}, doseq=True)
        if method == "GET":
            response, body = server.request(
                "GET", f"{path}?{encoded}" if encoded else path, headers=auth
            )
        else:
            response, body = server.request("POST", path, encoded.encode(), form)
        assert response.status == status, (path, body[:300])
        assert response.getheader("Content-Type", "").startswith("application/json"), path
        answer = json.loads(body)
        assert answer["status"] == "success", answer
        return answer["data"]

    # Save & test.
    assert call("POST", "/api/v1/query", {"query": "1+1", "time": "4"}) == {
        "resultType": "scalar",
        "result": [4, "2"],
    }
    assert "features" not in call("GET", "/api/v1/status/buildinfo")
    # Start-up probes, whose errors Grafana would ignore: they answer anyway.
    assert call("GET", "/api/v1/rules") == {"groups": []}
    assert (
        call(
            "POST",
            "/api/v1/query_exemplars",
            {"query": "demo_num_cpus", "start": start, "end": end},
        )
        == []
    )
    # The metric browser and the query builder.
    names = call("GET", "/api/v1/label/__name__/values", {"start": start, "end": end})
    assert "demo_memory_usage_bytes" in names and names == sorted(names)
    labels = call(
        "POST",
        "/api/v1/labels",
        [("start", start), ("end", end), ("match[]", "demo_memory_usage_bytes")],
    )
    assert {"__name__", "instance", "job", "type"} <= set(labels)
    metadata = call("GET", "/api/v1/metadata")
    assert metadata["demo_cpu_usage_seconds_total"][0]["type"] == "counter"
    series = call(
        "POST",
        "/api/v1/series",
        [
            ("match[]", 'demo_memory_usage_bytes{type="free"}'),
            ("start", start),
            ("end", end),
            ("limit", 2),
        ],
    )
    assert len(series) == 2 and all(s["type"] == "free" for s in series)
    # A dashboard variable: label_values(demo_memory_usage_bytes, instance).
    instances = call(
        "GET",
        "/api/v1/label/instance/values",
        {"match[]": "demo_memory_usage_bytes", "start": start, "end": end},
    )
    assert len(instances) == 3
    # A panel over the last 30 minutes, and the same panel's query as an alert rule evaluates it.
    query = "sum by (instance) (rate(demo_cpu_usage_seconds_total[5m]))"
    panel = call(
        "POST", "/api/v1/query_range", {"query": query, "start": start, "end": end, "step": step}
    )
    assert panel["resultType"] == "matrix" and len(panel["result"]) == 3
    for row in panel["result"]:
        assert all(float(value) >= 0 for _, value in row["values"])
        assert row["values"][-1][0] <= end
    alert = call("POST", "/api/v1/query", {"query": f"{query} > 0", "time": now})
    assert alert["resultType"] == "vector" and len(alert["result"]) == 3
    # A broken query in the editor: Prometheus's error shape, which Grafana shows.
    response, body = server.request(
        "POST", "/api/v1/query_range", b"query=sum(&start=0&end=1&step=1", form
    )
    assert response.status == 400 and json.loads(body)["errorType"] == "bad_data"
