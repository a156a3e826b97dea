"""Rule groups evaluated as Prometheus evaluates them, with the alert state in PostgreSQL.

A group runs at ticks aligned on its interval (Unix time a multiple of it); its rules run in
order, all at the tick's time, each one's output written before the next runs, so a recording
rule feeds the alerts after it. One process at a time evaluates a group (an advisory lock per
group), and a tick already evaluated is never evaluated again (`GroupState.last_tick`).

The alert states follow Prometheus's `AlertingRule.Eval` (rules/alerting.go, 2.42): a new label
set is pending from the tick it appears, firing once it has been active for `for`; an alert
whose condition clears is resolved at once, or after `keep_firing_for`; resolved alerts stay
15 minutes to be sent as resolved. `ALERTS{alertname, alertstate, …}` (1) and
`ALERTS_FOR_STATE{alertname, …}` (when the alert became active, Unix seconds) are written for
every pending and firing alert at every tick.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import transaction

from glowing_fiesta import monitoring
from glowing_fiesta.exceptions import Problem
from metrics.points import VALUE_MAX
from metrics.services import PointInput, points_ingest
from promql.errors import PromQLError
from promql.queries import query_instant
from promql.values import NAME, Scalar, Vector

from . import notifications, storage
from .models import Alert, AlertState, GroupState
from .rules import Group, Rule
from .templates import Data, template_expand

logger = logging.getLogger(__name__)

RESOLVED_RETENTION = timedelta(minutes=15)


class RuleEvaluationError(Exception):
    """A rule whose result cannot be used (duplicate label sets, over its limit)."""


@dataclass
class Outcome:
    """What one group's evaluation did, for the caller and the tests."""

    evaluated: bool
    tick: datetime
    group: str = ""
    errors: dict[str, str] = field(default_factory=dict)
    missed: int = 0


def fingerprint(labels: dict[str, str]) -> str:
    text = json.dumps(sorted(labels.items()), separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def tick_of(now: datetime, interval_s: float) -> datetime:
    """The latest evaluation time of a group with this interval at `now`."""
    interval_ms = round(interval_s * 1000)
    now_ms = math.floor(now.timestamp() * 1000)
    return datetime.fromtimestamp((now_ms - now_ms % interval_ms) / 1000, UTC)


def _samples(expr: str, at: datetime) -> Iterator[tuple[dict[str, str], float]]:
    value, _ = query_instant(query=expr, time_s=at.timestamp())
    if isinstance(value, Scalar):
        yield {}, float(value.values[0])
        return
    if not isinstance(value, Vector):
        raise RuleEvaluationError("rule result is not a vector or a scalar")
    for labels, values, present in zip(value.labels, value.values, value.present, strict=True):
        if present[0]:
            yield dict(labels), float(values[0])


def _storable(value: float) -> bool:
    return math.isfinite(value) and abs(value) <= VALUE_MAX


def _record(rule: Rule, at: datetime, limit: int) -> int:
    points: list[PointInput] = []
    seen: set[str] = set()
    for labels, value in _samples(rule.expr, at):
        labels.pop(NAME, None)
        for key, text in rule.labels.items():
            if text:
                labels[key] = text
            else:
                labels.pop(key, None)
        key = fingerprint(labels)
        if key in seen:
            raise RuleEvaluationError(
                "vector contains metrics with the same labelset after applying rule labels"
            )
        seen.add(key)
        if _storable(value):
            points.append(PointInput("value", rule.name, value, at, labels))
    if limit and len(seen) > limit:
        raise RuleEvaluationError(f"exceeded limit of {limit} with {len(seen)} series")
    return points_ingest(points=points) if points else 0


def _alert(
    group: Group, rule: Rule, at: datetime, alerts: dict[str, Alert], gone: list[Alert]
) -> None:
    """Update the rule's alerts in `alerts` (by fingerprint) for tick `at`; alerts to delete
    go to `gone`; write ALERTS and ALERTS_FOR_STATE."""
    found: dict[str, tuple[dict[str, str], dict[str, str], float]] = {}
    external = settings.ALERTING_EXTERNAL_LABELS
    for sample_labels, value in _samples(rule.expr, at):
        data = Data(sample_labels, external, settings.ALERTING_EXTERNAL_URL, value)
        labels = {k: v for k, v in sample_labels.items() if k != NAME}
        for key, text in rule.labels.items():
            expanded = template_expand(text, data)
            if expanded:
                labels[key] = expanded
            else:
                labels.pop(key, None)
        labels["alertname"] = rule.name
        annotations = {key: template_expand(text, data) for key, text in rule.annotations.items()}
        key = fingerprint(labels)
        if key in found:
            raise RuleEvaluationError(
                "vector contains metrics with the same labelset after applying alert labels"
            )
        found[key] = (labels, annotations, value)

    for key, (labels, annotations, value) in found.items():
        alert = alerts.get(key)
        if alert is not None and alert.state != AlertState.INACTIVE:
            alert.value, alert.annotations = value, annotations
            continue
        alerts[key] = Alert(
            id=alert.id if alert is not None else None,
            group_key=group.key,
            rule_name=rule.name,
            fingerprint=key,
            labels=labels,
            annotations=annotations,
            state=AlertState.PENDING,
            value=value,
            active_at=at,
        )

    points: list[PointInput] = []
    active = 0
    for key, alert in list(alerts.items()):
        if key not in found:
            keep_firing = False
            if alert.state == AlertState.FIRING and rule.keep_firing_for_s > 0:
                if alert.keep_firing_since is None:
                    alert.keep_firing_since = at
                held = (at - alert.keep_firing_since).total_seconds()
                keep_firing = held < rule.keep_firing_for_s
            if alert.state == AlertState.PENDING or (
                alert.resolved_at is not None and at - alert.resolved_at > RESOLVED_RETENTION
            ):
                del alerts[key]
                gone.append(alert)
            if alert.state != AlertState.INACTIVE and not keep_firing:
                alert.state, alert.resolved_at = AlertState.INACTIVE, at
            if not keep_firing:
                continue
        else:
            alert.keep_firing_since = None
        active += 1
        if alert.state == AlertState.PENDING and (
            (at - alert.active_at).total_seconds() >= rule.for_s
        ):
            alert.state, alert.fired_at = AlertState.FIRING, at
        points.append(
            PointInput("value", "ALERTS", 1.0, at, {**alert.labels, "alertstate": alert.state})
        )
        points.append(
            PointInput("value", "ALERTS_FOR_STATE", alert.active_at.timestamp(), at, alert.labels)
        )
    if group.limit and active > group.limit:
        for key, alert in list(alerts.items()):
            del alerts[key]
            gone.append(alert)
        raise RuleEvaluationError(f"exceeded limit of {group.limit} with {active} alerts")
    if points:
        points_ingest(points=points)


def group_evaluate(group: Group, *, tick: datetime) -> Outcome:
    """Evaluate `group` at `tick` unless another process is evaluating it or has evaluated
    this tick (or a later one) already. Queues the alerts that need sending."""
    with storage.group_lock(group.key) as acquired:
        if not acquired:
            return Outcome(False, tick, group.key)
        state, _ = GroupState.objects.get_or_create(key=group.key)
        if state.last_tick is not None and state.last_tick >= tick:
            return Outcome(False, tick, group.key)
        missed = 0
        if state.last_tick is not None:
            steps = (tick - state.last_tick).total_seconds() / group.interval_s
            missed = max(0, round(steps) - 1)
        return _evaluate(group, tick, state, missed)


def _evaluate(group: Group, tick: datetime, state: GroupState, missed: int) -> Outcome:
    outcome = Outcome(True, tick, group.key, missed=missed)
    started = time.monotonic()
    by_rule: dict[str, dict[str, Alert]] = {}
    gone: list[Alert] = []
    names = {rule.name for rule in group.rules if rule.kind == "alert"}
    for alert in Alert.objects.filter(group_key=group.key):
        if alert.rule_name in names:
            by_rule.setdefault(alert.rule_name, {})[alert.fingerprint] = alert
        else:
            gone.append(alert)  # its rule was removed by a reload
    rule_states = []
    for index, rule in enumerate(group.rules):
        rule_started = time.monotonic()
        error = ""
        try:
            if rule.kind == "record":
                _record(rule, tick, group.limit)
            else:
                _alert(group, rule, tick, by_rule.setdefault(rule.name, {}), gone)
        except (PromQLError, Problem, RuleEvaluationError) as exc:
            error = getattr(exc, "message", None) or getattr(exc, "detail", None) or str(exc)
            outcome.errors[f"{index}:{rule.name}"] = error
            logger.warning(
                "rule evaluation failed",
                extra={"group": group.key, "rule": rule.name, "error": error},
            )
        rule_states.append(
            {
                "health": "err" if error else "ok",
                "lastError": error,
                "lastEvaluation": tick.isoformat(),
                "evaluationTime": time.monotonic() - rule_started,
            }
        )
    alerts = [alert for rules in by_rule.values() for alert in rules.values()]
    with transaction.atomic():
        Alert.objects.filter(id__in=[a.id for a in gone if a.id is not None]).delete()
        notifications.alerts_queue(group, alerts, at=tick)
        for alert in alerts:
            alert.save()
        state.last_tick = tick
        state.last_evaluation = datetime.now(UTC)
        state.evaluation_seconds = time.monotonic() - started
        state.rules = rule_states
        state.save()
    monitoring.rule_group_evaluated(
        group=group.key,
        seconds=state.evaluation_seconds,
        failures=len(outcome.errors),
        missed=missed,
    )
    return outcome


def groups_evaluate(groups: list[Group], *, now: datetime) -> list[Outcome]:
    """Evaluate every group whose current tick at `now` has not been evaluated: the beat
    task's work, safe to run in several processes at once."""
    return [group_evaluate(group, tick=tick_of(now, group.interval_s)) for group in groups]
