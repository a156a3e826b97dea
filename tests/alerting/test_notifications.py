"""Alerts reach a real Alertmanager (Debian's prometheus-alertmanager on a free port), which
calls the test's webhook: firing with the rendered annotations, then resolved; an Alertmanager
that is down loses no firing alert once it is back, and evaluation goes on meanwhile."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from alerting.evaluation import Outcome, groups_evaluate, tick_of
from alerting.models import Notification
from alerting.notifications import notifications_send
from alerting.rulesets import ruleset_groups, ruleset_reload
from glowing_fiesta.monitoring import figures
from tests.alerting.alertmanager import Alertmanager, Webhook, alertmanager_create, webhook_start
from tests.helpers import ingest, truncate_point_tables, wait_for

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        shutil.which("prometheus-alertmanager") is None
        and not Path("/usr/bin/prometheus-alertmanager").exists(),
        reason="prometheus-alertmanager is not installed",
    ),
]

RULES = """
groups:
  - name: queues
    interval: 1s
    rules:
      - alert: QueueHigh
        expr: queue_depth > 100
        labels: {severity: page}
        annotations:
          summary: "{{ $labels.job }} queue at {{ $value }}"
          where: "{{ $externalLabels.cluster }}"
"""


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = webhook_start()
    yield hook
    hook.stop()


@pytest.fixture
def alertmanager(tmp_path: Path, webhook: Webhook) -> Iterator[Alertmanager]:
    am = alertmanager_create(tmp_path / "alertmanager", webhook.url)
    am.start()
    yield am
    am.stop()


@pytest.fixture(autouse=True)
def _rules(tmp_path: Path, settings, alertmanager: Alertmanager):
    truncate_point_tables()
    path = tmp_path / "queues.yml"
    path.write_text(RULES)
    settings.RULE_FILES = [str(path)]
    settings.ALERTMANAGER_URLS = [alertmanager.url]
    settings.ALERTING_EXTERNAL_LABELS = {"cluster": "test"}
    settings.ALERTING_EXTERNAL_URL = "http://gf.example"
    assert ruleset_reload(now=datetime.now(UTC)).ok
    yield
    truncate_point_tables()


_last_tick: list[datetime] = []


def evaluate_next_tick() -> Outcome:
    """Evaluate at the next whole second not evaluated yet (the group's interval is 1 s)."""
    while _last_tick and tick_of(datetime.now(UTC), 1) <= _last_tick[-1]:
        time.sleep(0.05)
    (outcome,) = groups_evaluate(ruleset_groups(), now=datetime.now(UTC))
    assert outcome.evaluated, outcome
    _last_tick.append(outcome.tick)
    return outcome


def depth(job: str, value: float) -> None:
    # A second back: at or before the tick the next evaluation runs at.
    ingest("value", "queue_depth", (value, datetime.now(UTC) - timedelta(seconds=1), {"job": job}))


def errors(url: str) -> float:
    return figures.NOTIFICATIONS_ERRORS.labels(url)._value.get()


def test_a_firing_alert_reaches_the_webhook_rendered_then_its_resolution(
    alertmanager: Alertmanager, webhook: Webhook
):
    _last_tick.clear()
    depth("mail", 150)
    evaluate_next_tick()
    assert notifications_send() == {alertmanager.url: 1}
    wait_for(lambda: webhook.alerts("firing"), timeout=30, what="the firing notification")
    (firing,) = webhook.alerts("firing")
    assert firing["labels"] == {
        "alertname": "QueueHigh", "job": "mail", "severity": "page", "cluster": "test",
    }  # fmt: skip
    assert firing["annotations"] == {"summary": "mail queue at 150", "where": "test"}
    assert firing["generatorURL"] == "http://gf.example/graph?g0.expr=queue_depth+%3E+100&g0.tab=1"

    depth("mail", 50)
    evaluate_next_tick()
    assert notifications_send() == {alertmanager.url: 1}
    wait_for(lambda: webhook.alerts("resolved"), timeout=30, what="the resolution")
    (resolved,) = webhook.alerts("resolved")
    assert resolved["labels"] == firing["labels"]
    assert resolved["endsAt"] >= resolved["startsAt"]
    assert Notification.objects.count() == 0


def test_alertmanager_down_loses_no_firing_alert_and_evaluation_goes_on(
    alertmanager: Alertmanager, webhook: Webhook
):
    _last_tick.clear()
    url = alertmanager.url
    before = errors(url)
    alertmanager.stop()
    depth("batch", 300)
    started = time.monotonic()
    outages = 0
    # Evaluations and deliveries go on for several ticks while it is down.
    while outages < 3 or time.monotonic() - started < 5:
        evaluate_next_tick()
        assert notifications_send() == {url: 0}
        outages += 1
        depth("batch", 300)
    assert errors(url) - before >= outages
    (queued,) = Notification.objects.all()
    assert queued.payload["labels"]["job"] == "batch"

    alertmanager.start()
    assert notifications_send() == {url: 1}
    wait_for(lambda: webhook.alerts("firing"), timeout=30, what="the alert held during the outage")
    (firing,) = webhook.alerts("firing")
    assert firing["labels"]["job"] == "batch"
    assert firing["annotations"]["summary"] == "batch queue at 300"
    assert [a["labels"]["job"] for a in alertmanager.alerts()] == ["batch"]
    assert Notification.objects.count() == 0
