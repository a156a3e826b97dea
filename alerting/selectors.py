"""Reads of the rules and alerts, in the shapes of Prometheus's /api/v1/rules and /alerts."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from .models import Alert, AlertState, GroupState
from .rulesets import ruleset_groups

NEVER = "0001-01-01T00:00:00Z"


def _time(when: datetime | str | None) -> str:
    if when is None:
        return NEVER
    text = when if isinstance(when, str) else when.isoformat()
    return text.replace("+00:00", "Z")


def _alert(alert: Alert) -> dict[str, Any]:
    body: dict[str, Any] = {
        "labels": alert.labels,
        "annotations": alert.annotations,
        "state": alert.state,
        "activeAt": _time(alert.active_at),
        # Prometheus writes an alert's value as FormatFloat(v, 'e', 10, 64).
        "value": f"{alert.value:.10e}",
    }
    if alert.keep_firing_since is not None:
        body["keepFiringSince"] = _time(alert.keep_firing_since)
    return body


def alerts_active() -> list[dict[str, Any]]:
    """Every pending and firing alert (resolved ones are not shown, as in Prometheus)."""
    alerts = Alert.objects.exclude(state=AlertState.INACTIVE).order_by(
        "group_key", "rule_name", "id"
    )
    return [_alert(alert) for alert in alerts]


def rules_overview(*, kind: str = "") -> list[dict[str, Any]]:
    """The groups in force with each rule's health, last evaluation and alerts; `kind`
    "alert" or "record" keeps only those rules."""
    groups = ruleset_groups()
    states = {s.key: s for s in GroupState.objects.filter(key__in=[g.key for g in groups])}
    alerts: dict[tuple[str, str], list[Alert]] = {}
    for alert in Alert.objects.filter(group_key__in=[g.key for g in groups]).order_by("id"):
        alerts.setdefault((alert.group_key, alert.rule_name), []).append(alert)
    out = []
    for group in groups:
        state = states.get(group.key)
        rule_states = state.rules if state is not None else []
        rules = []
        for index, rule in enumerate(group.rules):
            health = rule_states[index] if index < len(rule_states) else {}
            common = {
                "name": rule.name,
                "query": rule.expr,
                "labels": rule.labels,
                "health": health.get("health", "unknown"),
                "lastError": health.get("lastError", ""),
                "evaluationTime": health.get("evaluationTime", 0),
                "lastEvaluation": _time(health.get("lastEvaluation")),
            }
            if rule.kind == "record":
                if kind != "alert":
                    rules.append({**common, "type": "recording"})
                continue
            if kind == "record":
                continue
            active = [
                a for a in alerts.get((group.key, rule.name), []) if a.state != AlertState.INACTIVE
            ]
            states_seen = {a.state for a in active}
            rule_state = next(
                (s for s in (AlertState.FIRING, AlertState.PENDING) if s in states_seen),
                AlertState.INACTIVE,
            )
            rules.append(
                {
                    **common,
                    "state": str(rule_state),
                    "duration": rule.for_s,
                    "keepFiringFor": rule.keep_firing_for_s,
                    "annotations": rule.annotations,
                    "alerts": [_alert(a) for a in active],
                    "type": "alerting",
                }
            )
        out.append(
            {
                "name": group.name,
                "file": group.file,
                "rules": rules,
                "interval": group.interval_s,
                "limit": group.limit,
                "evaluationTime": state.evaluation_seconds if state is not None else 0,
                "lastEvaluation": _time(state.last_evaluation if state is not None else None),
            }
        )
    return out
