"""Celery entry points of the rules: the evaluation tick and the notification queue; and the
beat hooks that load the rule files at start and again on SIGHUP."""

from __future__ import annotations

import logging
import signal
from typing import Any

from celery import shared_task
from celery.signals import beat_init
from django.conf import settings
from django.db import connection
from django.utils import timezone

from .evaluation import groups_evaluate
from .notifications import notifications_send
from .rulesets import ruleset_groups, ruleset_reload

logger = logging.getLogger(__name__)


# Sent by beat every ALERTING_TICK_SECONDS with that expiry; each group runs only when a new
# tick of its own interval has come, so the beat task may run often and in several workers.
@shared_task(name="alerting.rules_evaluate")
def rules_evaluate_task() -> int:
    """Evaluate the rule groups that are due; queue and send the alerts that need it."""
    outcomes = groups_evaluate(ruleset_groups(), now=timezone.now())
    if settings.ALERTMANAGER_URLS and any(outcome.evaluated for outcome in outcomes):
        notifications_send_task.delay()
    return sum(outcome.evaluated for outcome in outcomes)


@shared_task(name="alerting.notifications_send")
def notifications_send_task() -> int:
    """Deliver the queued alerts to every Alertmanager; what fails stays queued."""
    return sum(notifications_send().values())


def _reload(reason: str) -> None:
    try:
        result = ruleset_reload(now=timezone.now())
        logger.info("rule files read", extra={"reason": reason, "ok": result.ok, "error": result.error})  # fmt: skip
    finally:
        connection.close()


@beat_init.connect
def _beat_started(sender: Any = None, **_: Any) -> None:
    # The rule files are validated when beat starts, and again on SIGHUP: a bad file keeps the
    # rules in force and says why in the log (and in reload_rules' exit status).
    _reload("start")
    signal.signal(signal.SIGHUP, lambda signum, frame: _reload("SIGHUP"))
