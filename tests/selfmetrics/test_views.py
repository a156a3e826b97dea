"""GET /metrics: who may read it, what a fresh server's first scrape shows, and that promtool
accepts the live text, the alerting rules and the scrape configuration."""

from __future__ import annotations

import itertools
import re
import shutil
import subprocess

import pytest

from glowing_fiesta.monitoring import figures
from tests.processes import ROOT, samples, scrape_text


def _promtool_check_metrics(text: str) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: apt-get install prometheus (bash .ci/run does)"
    checked = subprocess.run(  # noqa: S603
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert not checked.stdout.strip(), checked.stdout  # no lint complaint either


def _known_counter_series() -> list[tuple[str, tuple[tuple[str, str], ...]]]:
    """(sample name, sorted labels) of every known series of every labelled counter."""
    return [
        (counter._name + "_total", tuple(sorted(zip(counter._labelnames, values, strict=True))))
        for counter, label_values in figures.COUNTER_LABEL_VALUES
        for values in itertools.product(*label_values)
    ]


@pytest.mark.django_db
def test_metrics_needs_a_key_with_the_read_scope(make_api_client, client_anon):
    assert client_anon.get("/metrics").status_code == 401
    writer = make_api_client(scopes=["write"])
    assert writer.get("/metrics").status_code == 403
    reader = make_api_client(scopes=["read"])
    response = reader.get("/metrics")  # X-API-Key works as well as Bearer
    assert response.status_code == 200
    assert b"# TYPE glowing_fiesta_queue_depth gauge" in response.content


@pytest.mark.django_db
def test_every_known_counter_series_is_on_the_first_scrape_of_this_process(make_api_client):
    reader = make_api_client(scopes=["read"])
    parsed = samples(reader.get("/metrics").content.decode())
    missing = [series for series in _known_counter_series() if series not in parsed]
    assert missing == []


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_fresh_servers_first_scrape_shows_every_labelled_counter_at_zero(stack):
    # rate() and increase() alerts need the series before the first event: a fresh server (an
    # empty multiprocess directory, nothing recorded) exports each known one at 0.
    service = stack.serve(workers=2)
    text = scrape_text(service, stack.read_key)
    parsed = samples(text)
    known = _known_counter_series()
    assert {series: parsed.get(series) for series in known} == dict.fromkeys(known, 0.0)
    # A few by name, so that the lists of figures.py cannot shrink unseen.
    for name, labels in [
        ("glowing_fiesta_ingestion_failures_total", (("reason", "type_conflict"),)),
        ("glowing_fiesta_ingestion_failures_total", (("reason", "batch_failed"),)),
        ("glowing_fiesta_auth_failures_total", (("reason", "missing"),)),
        ("glowing_fiesta_auth_failures_total", (("reason", "insufficient_scope"),)),
        ("glowing_fiesta_points_ingested_total", (("path", "async"),)),
        ("glowing_fiesta_retention_deleted_total", (("table", "metric_points"),)),
        (
            "glowing_fiesta_celery_tasks_total",
            (("outcome", "failure"), ("task", "metrics.ProcessMetricBatch")),
        ),
        (
            "glowing_fiesta_celery_tasks_total",
            (("outcome", "retry"), ("task", "selfmetrics.gauges_store")),
        ),
    ]:
        assert parsed[name, labels] == 0, (name, labels)
    _promtool_check_metrics(text)


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_promtool_accepts_the_live_metrics_the_rules_and_the_scrape_config(stack):
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: apt-get install prometheus (bash .ci/run does)"
    service = stack.serve(workers=1)
    service.request("POST", "/api/metrics/counter", {"name": "x"}, **{"X-API-Key": stack.write_key})
    service.request("GET", "/api/metrics/x?aggregation=p95", **{"X-API-Key": stack.write_key})
    text = scrape_text(service, stack.read_key)
    assert "glowing_fiesta_aggregation_latency_seconds_bucket" in text
    _promtool_check_metrics(text)
    rules = subprocess.run(  # noqa: S603
        [promtool, "check", "rules", str(ROOT / "deploy" / "prometheus" / "alerts.yml")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert rules.returncode == 0, rules.stdout + rules.stderr
    assert re.search(r"SUCCESS: [1-9]\d* rules found", rules.stdout), rules.stdout
    config = subprocess.run(  # noqa: S603
        [promtool, "check", "config", "--syntax-only", str(ROOT / "deploy" / "prometheus" / "prometheus.yml")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert config.returncode == 0, config.stdout + config.stderr
