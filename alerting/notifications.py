"""Alerts sent to Alertmanager's API v2 (`POST <url>/api/v2/alerts`), as Prometheus sends them.

After each evaluation, every alert that needs sending (Prometheus's `needsSending`: firing and
not sent for `resend_delay`, or resolved since it was last sent) is queued for every URL of
ALERTMANAGER_URLS: labels with the external labels added, annotations, `startsAt` (when it
fired), `endsAt` (when it resolved, or 4 x max(resend delay, group interval) ahead while it
fires, so Alertmanager resolves an alert nobody resends) and `generatorURL` (the expression in
the service's graph page address, as Prometheus writes it).

The queue is a table: one row per (Alertmanager, alert), the newest payload replacing an older
one waiting, at most ALERTING_QUEUE_CAPACITY rows per Alertmanager (the oldest dropped and
counted). A Celery task drains it; an Alertmanager that is down keeps its rows for the next try
while evaluation goes on, so no firing alert is lost across an outage.
"""

from __future__ import annotations

import hashlib
import json
import logging
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from datetime import datetime, timedelta

from django.conf import settings

from glowing_fiesta import monitoring

from . import storage
from .models import Alert, AlertState, Notification
from .rules import Group

logger = logging.getLogger(__name__)

SEND_BATCH = 1000


def _needs_sending(alert: Alert, at: datetime, resend: timedelta) -> bool:
    if alert.state == AlertState.PENDING:
        return False
    if alert.resolved_at is not None and (
        alert.last_sent_at is None or alert.resolved_at > alert.last_sent_at
    ):
        return True
    if alert.state == AlertState.INACTIVE:
        return False
    return alert.last_sent_at is None or alert.last_sent_at + resend < at


def generator_url(expr: str) -> str:
    query = urllib.parse.quote_plus(expr)
    return f"{settings.ALERTING_EXTERNAL_URL}/graph?g0.expr={query}&g0.tab=1"


def _iso(when: datetime) -> str:
    return when.isoformat().replace("+00:00", "Z")


def alerts_queue(group: Group, alerts: Sequence[Alert], *, at: datetime) -> int:
    """Queue, for every Alertmanager, the alerts of `group` that need sending at `at`; mark
    them sent (`last_sent_at`). The caller saves the alerts. Returns the alerts queued."""
    resend = timedelta(seconds=settings.ALERTING_RESEND_DELAY_SECONDS)
    valid_for = 4 * max(resend, timedelta(seconds=group.interval_s))
    exprs = {rule.name: rule.expr for rule in group.rules if rule.kind == "alert"}
    rows = []
    for alert in alerts:
        if not _needs_sending(alert, at, resend):
            continue
        alert.last_sent_at = at
        labels = {**settings.ALERTING_EXTERNAL_LABELS, **alert.labels}
        ends = alert.resolved_at if alert.resolved_at is not None else at + valid_for
        payload = {
            "labels": labels,
            "annotations": alert.annotations,
            "startsAt": _iso(alert.fired_at or alert.active_at),
            "endsAt": _iso(ends),
            "generatorURL": generator_url(exprs.get(alert.rule_name, "")),
        }
        text = json.dumps(payload, sort_keys=True)
        for url in settings.ALERTMANAGER_URLS:
            rows.append((url, _key(group.key, alert.fingerprint), text, at))
    if not rows:
        return 0
    dropped = storage.notifications_queue(rows, capacity=settings.ALERTING_QUEUE_CAPACITY)
    for url, count in dropped.items():
        monitoring.notifications_observe(alertmanager=url, dropped=count)
        logger.warning("alert queue full; oldest dropped", extra={"alertmanager": url, "dropped": count})  # fmt: skip
    return len(rows) // max(1, len(settings.ALERTMANAGER_URLS))


def _key(group_key: str, fingerprint: str) -> str:
    return hashlib.sha256(f"{group_key}\x00{fingerprint}".encode()).hexdigest()


def _post(url: str, payloads: list[dict]) -> None:
    request = urllib.request.Request(  # noqa: S310 - the URL is the operator's setting
        url.rstrip("/") + "/api/v2/alerts",
        data=json.dumps(payloads).encode(),
        headers={"Content-Type": "application/json", "User-Agent": "glowing-fiesta"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=settings.ALERTMANAGER_TIMEOUT_SECONDS) as answer:  # noqa: S310
        answer.read()


def notifications_send() -> dict[str, int]:
    """Send what waits for each Alertmanager, oldest first, in batches; a failed batch stays
    queued for the next run. Returns the alerts delivered per URL."""
    delivered: dict[str, int] = {}
    for url in settings.ALERTMANAGER_URLS:
        monitoring.notifications_observe(alertmanager=url)  # the series exist from the start
        delivered[url] = 0
        while True:
            rows = list(
                Notification.objects.filter(url=url).order_by("queued_at", "id")[:SEND_BATCH]
            )
            if not rows:
                break
            try:
                _post(url, [row.payload for row in rows])
            except (OSError, urllib.error.URLError) as exc:
                monitoring.notifications_observe(alertmanager=url, errors=len(rows))
                logger.warning(
                    "Alertmanager unreachable; alerts kept to retry",
                    extra={"alertmanager": url, "alerts": len(rows), "error": str(exc)},
                )
                break
            storage.notifications_delivered([(row.id, row.queued_at) for row in rows])
            monitoring.notifications_observe(alertmanager=url, sent=len(rows))
            delivered[url] += len(rows)
            if len(rows) < SEND_BATCH:
                break
    return delivered
