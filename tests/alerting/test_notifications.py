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

pytestmark = pytest.mark.django_db(transaction=True)
needs_alertmanager = pytest.mark.skipif(
    shutil.which("prometheus-alertmanager") is None
    and not Path("/usr/bin/prometheus-alertmanager").exists(),
    reason="prometheus-alertmanager is not installed",
)

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
def _points():
    truncate_point_tables()
    yield
    truncate_point_tables()


def rules_load(tmp_path: Path, settings, url: str) -> None:
    path = tmp_path / "queues.yml"
    path.write_text(RULES)
    settings.RULE_FILES = [str(path)]
    settings.ALERTMANAGER_URLS = [url]
    settings.ALERTING_EXTERNAL_LABELS = {"cluster": "test"}
    settings.ALERTING_EXTERNAL_URL = "http://gf.example"
    assert ruleset_reload(now=datetime.now(UTC)).ok


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


@needs_alertmanager
def test_a_firing_alert_reaches_the_webhook_rendered_then_its_resolution(
    alertmanager: Alertmanager, webhook: Webhook, tmp_path, settings
):
    rules_load(tmp_path, settings, alertmanager.url)
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


@needs_alertmanager
def test_alertmanager_down_loses_no_firing_alert_and_evaluation_goes_on(
    alertmanager: Alertmanager, webhook: Webhook, tmp_path, settings
):
    rules_load(tmp_path, settings, alertmanager.url)
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


# An address nothing listens on: sends fail, the queue is what is tested.
NOWHERE = "http://127.0.0.1:9"


def evaluate_at(at: datetime) -> None:
    (outcome,) = groups_evaluate(ruleset_groups(), now=at)
    assert outcome.evaluated and not outcome.errors, outcome


@pytest.mark.parametrize(("capacity", "kept", "dropped"), [(3, 3, 0), (2, 2, 1)])
def test_the_queue_holds_its_capacity_and_drops_the_oldest_past_it(
    tmp_path, settings, capacity, kept, dropped
):
    rules_load(tmp_path, settings, NOWHERE)
    settings.ALERTING_QUEUE_CAPACITY = capacity
    start = tick_of(datetime.now(UTC) - timedelta(hours=1), 1)
    before = figures.NOTIFICATIONS_DROPPED.labels(NOWHERE)._value.get()
    for n, job in enumerate(("a", "b", "c")):  # one new alert a second: the oldest is "a"
        ingest("value", "queue_depth", (500.0, start, {"job": job}))
        evaluate_at(start + timedelta(seconds=n))
    jobs = sorted(row.payload["labels"]["job"] for row in Notification.objects.all())
    assert jobs == ["a", "b", "c"][3 - kept :]
    assert figures.NOTIFICATIONS_DROPPED.labels(NOWHERE)._value.get() - before == dropped
    assert notifications_send() == {NOWHERE: 0}
    assert Notification.objects.count() == kept


def test_a_firing_alert_is_sent_again_after_the_resend_delay_and_once_resolved(tmp_path, settings):
    rules_load(tmp_path, settings, NOWHERE)
    settings.ALERTING_RESEND_DELAY_SECONDS = 10
    start = tick_of(datetime.now(UTC) - timedelta(hours=1), 1)
    ingest("value", "queue_depth", (500.0, start, {"job": "a"}))

    def queued_at() -> datetime:
        return Notification.objects.get().queued_at

    evaluate_at(start)
    assert queued_at() == start
    evaluate_at(start + timedelta(seconds=10))  # exactly the delay: not yet (Prometheus: after)
    assert queued_at() == start
    evaluate_at(start + timedelta(seconds=11))
    assert queued_at() == start + timedelta(seconds=11)
    assert Notification.objects.get().payload["endsAt"] == (
        start + timedelta(seconds=11 + 40)
    ).isoformat().replace("+00:00", "Z")
    ingest("value", "queue_depth", (5.0, start + timedelta(seconds=12), {"job": "a"}))
    evaluate_at(start + timedelta(seconds=12))  # resolved: sent at once, endsAt its time
    assert queued_at() == start + timedelta(seconds=12)
    assert Notification.objects.get().payload["endsAt"] == (
        start + timedelta(seconds=12)
    ).isoformat().replace("+00:00", "Z")
