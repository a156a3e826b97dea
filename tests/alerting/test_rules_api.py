"""GET /api/v1/rules and /api/v1/alerts over rules the service evaluated: Prometheus's shape,
states, health and errors; ALERTS readable through the query API."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from alerting.evaluation import groups_evaluate, tick_of
from alerting.models import Alert, AlertState
from alerting.rulesets import ruleset_groups, ruleset_reload
from glowing_fiesta.monitoring import figures
from tests.helpers import ingest, truncate_point_tables

pytestmark = pytest.mark.django_db(transaction=True)

RULES = """
groups:
  - name: api
    interval: 1m
    rules:
      - record: job:queue_depth:max
        expr: max by (job) (queue_depth)
      - alert: QueueHigh
        expr: job:queue_depth:max > 100
        for: 2m
        labels: {severity: page}
        annotations: {summary: "{{ $labels.job }} queue at {{ $value }}"}
      - alert: Broken
        expr: queue_depth / on() group_left queue_depth
"""


@pytest.fixture(autouse=True)
def _empty_points():
    truncate_point_tables()
    yield
    truncate_point_tables()


@pytest.fixture
def reader(make_api_client):
    return make_api_client(scopes=["read"])


def data(response) -> dict:
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "success"
    return body["data"]


def test_before_any_rules_load_both_answer_empty(reader):
    assert data(reader.get("/api/v1/rules")) == {"groups": []}
    assert data(reader.post("/api/v1/alerts")) == {"alerts": []}


def test_rules_and_alerts_show_states_health_and_errors(
    reader, make_api_client, tmp_path: Path, settings
):
    path = tmp_path / "api.yml"
    path.write_text(RULES)
    settings.RULE_FILES = [str(path)]
    assert ruleset_reload(now=datetime.now(UTC)).ok
    start = tick_of(datetime.now(UTC) - timedelta(hours=1), 60)
    for minute in range(4):
        when = start + timedelta(minutes=minute)
        ingest("value", "queue_depth", (150.0, when, {"job": "mail", "host": "a"}))
        ingest("value", "queue_depth", (150.0, when, {"job": "mail", "host": "b"}))
    groups = ruleset_groups()
    groups_evaluate(groups, now=start + timedelta(minutes=1))

    (group,) = data(reader.get("/api/v1/rules"))["groups"]
    assert group["name"] == "api" and group["file"] == str(path) and group["interval"] == 60
    record, alert, broken = group["rules"]
    assert record["type"] == "recording" and record["health"] == "ok"
    assert record["lastEvaluation"] == (start + timedelta(minutes=1)).isoformat().replace(
        "+00:00", "Z"
    )
    assert alert["type"] == "alerting" and alert["state"] == "pending"
    assert alert["duration"] == 120 and alert["labels"] == {"severity": "page"}
    (pending,) = alert["alerts"]
    assert pending["labels"] == {"alertname": "QueueHigh", "job": "mail", "severity": "page"}
    assert pending["annotations"] == {"summary": "mail queue at 150"}
    assert pending["value"] == "1.5000000000e+02"
    assert broken["health"] == "err" and "many" in broken["lastError"], broken
    assert data(reader.get("/api/v1/alerts"))["alerts"] == [pending]
    # A key limited to some metric-name prefixes sees no rule and no alert.
    narrow = make_api_client(scopes=["read"], namespaces=["queue_"])
    assert data(narrow.get("/api/v1/alerts")) == {"alerts": []}
    assert data(narrow.get("/api/v1/rules")) == {"groups": []}

    groups_evaluate(groups, now=start + timedelta(minutes=2))
    groups_evaluate(groups, now=start + timedelta(minutes=3))
    (firing,) = data(reader.get("/api/v1/alerts"))["alerts"]
    assert firing["state"] == "firing"
    assert firing["activeAt"] == (start + timedelta(minutes=1)).isoformat().replace("+00:00", "Z")
    assert [r["state"] for r in data(reader.get("/api/v1/rules?type=alert"))["groups"][0]["rules"]] == ["firing", "inactive"]  # fmt: skip
    assert [r["name"] for r in data(reader.get("/api/v1/rules", {"type": "record"}))["groups"][0]["rules"]] == ["job:queue_depth:max"]  # fmt: skip

    at = (start + timedelta(minutes=3)).timestamp()
    result = data(reader.get("/api/v1/query", {"query": "ALERTS", "time": at}))["result"]
    # No staleness markers: the pending series, last written a minute ago, answers for the
    # lookback still (Prometheus would have marked it stale at this evaluation).
    states = sorted((r["metric"]["alertstate"], r["value"][1]) for r in result)
    assert states == [("firing", "1"), ("pending", "1")]
    for_state = data(reader.get("/api/v1/query", {"query": "ALERTS_FOR_STATE", "time": at}))
    assert [r["value"][1] for r in for_state["result"]] == [
        str(int((start + timedelta(minutes=1)).timestamp()))
    ]
    recorded = data(reader.get("/api/v1/query", {"query": "job:queue_depth:max", "time": at}))
    assert [(r["metric"], r["value"][1]) for r in recorded["result"]] == [
        ({"__name__": "job:queue_depth:max", "job": "mail"}, "150")
    ]


def test_a_bad_type_is_400_bad_data(reader):
    response = reader.get("/api/v1/rules", {"type": "everything"})
    assert response.status_code == 400
    assert response.json()["errorType"] == "bad_data"


def test_a_tick_is_evaluated_once_and_missed_ticks_are_counted(tmp_path, settings):
    path = tmp_path / "api.yml"
    path.write_text(RULES)
    settings.RULE_FILES = [str(path)]
    ruleset_reload(now=datetime.now(UTC))
    start = tick_of(datetime.now(UTC) - timedelta(hours=1), 60)
    for host in ("a", "b"):  # two series: the Broken rule's many-to-many match fails
        ingest("value", "queue_depth", (1.0, start, {"job": "mail", "host": host}))
    groups = ruleset_groups()
    missed = figures.RULE_GROUP_ITERATIONS_MISSED.labels(groups[0].key)
    iterations = figures.RULE_GROUP_ITERATIONS.labels(groups[0].key)
    failures = figures.RULE_EVALUATION_FAILURES.labels(groups[0].key)
    before = (missed._value.get(), iterations._value.get(), failures._value.get())
    (first,) = groups_evaluate(groups, now=start + timedelta(seconds=10))
    (again,) = groups_evaluate(groups, now=start + timedelta(seconds=50))
    (later,) = groups_evaluate(groups, now=start + timedelta(minutes=4))
    assert first.evaluated and first.tick == start
    assert not again.evaluated
    assert later.evaluated and later.missed == 3
    after = (missed._value.get(), iterations._value.get(), failures._value.get())
    # Two evaluations, three ticks missed, the Broken rule failing each time.
    assert [b - a for a, b in zip(before, after, strict=True)] == [3, 2, 2]


def test_evaluate_rules_command_evaluates_the_due_tick_once(tmp_path, settings, capsys):
    path = tmp_path / "api.yml"
    path.write_text(RULES)
    settings.RULE_FILES = [str(path)]
    ruleset_reload(now=datetime.now(UTC))
    start = tick_of(datetime.now(UTC) - timedelta(hours=1), 60)
    ingest("value", "queue_depth", (150.0, start, {"job": "mail", "host": "a"}))
    call_command("evaluate_rules", "--now", str(start.timestamp() + 30), "--no-send")
    out = capsys.readouterr().out
    assert f"{path};api {start.isoformat()} evaluated" in out
    call_command("evaluate_rules", "--now", start.isoformat())
    assert f"{start.isoformat()} skipped" in capsys.readouterr().out
    assert Alert.objects.get(rule_name="QueueHigh").state == AlertState.PENDING
    with pytest.raises(CommandError, match="Unix seconds or ISO 8601"):
        call_command("evaluate_rules", "--now", "soon")


@pytest.mark.parametrize(("limit", "health"), [(2, "ok"), (1, "err")])
def test_a_group_limit_is_kept_at_its_edge(tmp_path, settings, limit, health):
    path = tmp_path / "limit.yml"
    path.write_text(
        f"groups: [{{name: l, limit: {limit}, rules: [{{alert: High, expr: 'queue_depth > 1'}}]}}]"
    )
    settings.RULE_FILES = [str(path)]
    ruleset_reload(now=datetime.now(UTC))
    start = tick_of(datetime.now(UTC) - timedelta(hours=1), 60)
    for host in ("a", "b"):
        ingest("value", "queue_depth", (5.0, start, {"job": "mail", "host": host}))
    (outcome,) = groups_evaluate(ruleset_groups(), now=start)
    assert list(outcome.errors.values()) == (
        [] if health == "ok" else ["exceeded limit of 1 with 2 alerts"]
    )
    assert Alert.objects.count() == (2 if health == "ok" else 0)


def test_a_reload_without_a_rule_or_group_drops_its_alerts(tmp_path, settings):
    path = tmp_path / "api.yml"
    path.write_text(RULES)
    settings.RULE_FILES = [str(path)]
    ruleset_reload(now=datetime.now(UTC))
    start = tick_of(datetime.now(UTC) - timedelta(hours=1), 60)
    ingest("value", "queue_depth", (500.0, start, {"job": "mail", "host": "a"}))
    groups_evaluate(ruleset_groups(), now=start)
    assert set(Alert.objects.values_list("rule_name", flat=True)) == {"QueueHigh", "Broken"}
    path.write_text(RULES.split("      - alert: Broken")[0])
    ruleset_reload(now=datetime.now(UTC))
    groups_evaluate(ruleset_groups(), now=start + timedelta(minutes=1))
    assert set(Alert.objects.values_list("rule_name", flat=True)) == {"QueueHigh"}
    path.write_text(RULES.replace("name: api", "name: renamed"))
    ruleset_reload(now=datetime.now(UTC))
    assert not Alert.objects.exists()
