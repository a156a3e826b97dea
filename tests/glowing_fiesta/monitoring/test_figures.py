"""The figures: every label value bounded and known in advance, never a key or a path."""

from __future__ import annotations

import ast

import pytest

from apikeys.authentication import _REJECTIONS
from glowing_fiesta.celery import app as celery_app
from glowing_fiesta.monitoring import figures, record
from retention.services import PRUNE_RULES
from tests.processes import samples, scrape_text, value
from tests.test_layout import project_modules

DURATION_COUNT = "glowing_fiesta_request_duration_seconds_count"


def _literal_arguments(function: str, keyword: str) -> set[str]:
    """Every string literal the project's modules pass to `function` (a recording call), first
    positional or as `keyword`."""
    found = set()
    for path in project_modules().values():
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            called = (
                node.func.attr
                if isinstance(node.func, ast.Attribute)
                else getattr(node.func, "id", None)
            )
            if called != function:
                continue
            arguments = [*node.args[:1], *(k.value for k in node.keywords if k.arg == keyword)]
            found.update(
                a.value
                for a in arguments
                if isinstance(a, ast.Constant) and isinstance(a.value, str)
            )
    return found


def test_every_ingestion_failure_reason_recorded_is_a_known_one():
    recorded = _literal_arguments("ingestion_failure", "reason")
    assert recorded
    recorded |= set(record._FAILURE_REASONS.values()) | {"unauthenticated", "database", "other"}
    assert recorded <= set(figures.INGESTION_FAILURE_REASONS)


def test_every_auth_failure_reason_recorded_is_a_known_one():
    recorded = _literal_arguments("auth_failure", "reason") | set(_REJECTIONS)
    assert recorded == set(figures.AUTH_FAILURE_REASONS)


def test_every_ingest_path_is_a_known_one():
    recorded = _literal_arguments("ingest_path", "path") | set(record._ROLE_PATHS.values())
    assert recorded | {"sync"} == set(figures.INGEST_PATHS)


def test_the_known_task_outcomes_are_those_the_signals_record():
    assert _literal_arguments("celery_task", "outcome") == set(figures.CELERY_TASK_OUTCOMES)


def test_the_known_task_names_are_the_tasks_the_celery_app_registers():
    celery_app.loader.import_default_modules()  # the autodiscovery a worker does at start
    registered = {name for name in celery_app.tasks if not name.startswith("celery.")}
    assert registered == set(figures.CELERY_TASK_NAMES)


def test_the_known_retention_tables_are_those_of_the_prune_rules():
    assert tuple(rule.table for rule in PRUNE_RULES) == figures.RETENTION_TABLES


def test_every_labelled_counter_has_its_known_values():
    labelled = {
        figure._name
        for figure in vars(figures).values()
        if type(figure).__name__ == "Counter" and figure._labelnames
    }
    listed = {counter._name for counter, _ in figures.COUNTER_LABEL_VALUES}
    configured = {counter._name for counter in figures.CONFIGURED_LABEL_COUNTERS}
    assert labelled == listed | configured and not listed & configured
    for counter, label_values in figures.COUNTER_LABEL_VALUES:
        assert len(label_values) == len(counter._labelnames), counter._name


ROUTE_NAMES = {
    "healthz", "readyz", "prometheus-metrics", "metric-counter", "metric-value", "metric-batch",
    "ingest-batch", "metric-query", "apikey-me", "unmatched",
}  # fmt: skip


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_no_label_holds_an_api_key_or_a_raw_path(stack):
    service = stack.serve(workers=1)
    secret = "s3cr3t-" + stack.write_key[3:11].lower()
    key = {"X-API-Key": stack.write_key}
    service.request("POST", "/api/metrics/counter", {"name": f"{secret}.name"}, **key)
    service.request("GET", f"/api/metrics/{secret}.name", **key)
    service.request("GET", f"/api/metrics/{secret}.missing", **key)
    service.request("GET", f"/no/such/{secret}/path")
    service.request("GET", f"/api/metrics/counter?api_key={stack.write_key}")
    service.request("GET", "/api/metrics/counter", Authorization=f"Bearer {stack.write_key}x")
    text = scrape_text(service, stack.read_key)
    assert stack.write_key not in text
    assert stack.read_key not in text
    assert stack.write_key[3:11] not in text  # not even the public prefix
    assert secret not in text
    assert "/no/such" not in text
    parsed = samples(text)
    routes = {
        dict(labels).get("route") for name, labels in parsed if name.startswith(DURATION_COUNT)
    }
    assert routes <= ROUTE_NAMES, routes
    assert "unmatched" in routes
    auth = "glowing_fiesta_auth_failures_total"
    assert value(parsed, auth, reason="in_url") == 1
    assert value(parsed, auth, reason="invalid") == 1
