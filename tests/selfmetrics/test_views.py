"""GET /metrics: who may read it, and that promtool accepts the live text, the alerting rules
and the scrape configuration."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from tests.processes import ROOT, scrape_text


def _promtool_check_metrics(text: str) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: apt-get install prometheus (bash .ci/run does)"
    checked = subprocess.run(  # noqa: S603
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert not checked.stdout.strip(), checked.stdout  # no lint complaint either


@pytest.mark.django_db
def test_metrics_needs_a_key_with_the_read_scope(make_api_client, client_anon):
    assert client_anon.get("/metrics").status_code == 401
    writer = make_api_client(scopes=["write"])
    assert writer.get("/metrics").status_code == 403
    reader = make_api_client(scopes=["read"])
    response = reader.get("/metrics")  # X-API-Key works as well as Bearer
    assert response.status_code == 200
    assert b"# TYPE glowing_fiesta_queue_depth gauge" in response.content


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
