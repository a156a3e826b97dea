"""The state of rule evaluation, kept in PostgreSQL so that every process sees one truth and a
restart of beat or a worker resumes where it stopped (a pending `for` keeps its start)."""

from __future__ import annotations

from django.db import models


class RuleSet(models.Model):
    """The rules in force: one row, replaced whole by a reload that validates (so every process
    swaps to the new rules at once). A reload that fails keeps `groups` and records why."""

    groups = models.JSONField(default=list)
    loaded_at = models.DateTimeField(null=True)
    files = models.JSONField(default=list)
    error = models.TextField(blank=True, default="")
    error_at = models.DateTimeField(null=True)

    class Meta:
        db_table = "alerting_rule_set"


class GroupState(models.Model):
    """What the last evaluation of a group did: its tick (never evaluated twice), when it ran,
    how long, and each rule's health (`rules`: a list in the group's order)."""

    key = models.CharField(max_length=1000, unique=True)
    last_tick = models.DateTimeField(null=True)
    last_evaluation = models.DateTimeField(null=True)
    evaluation_seconds = models.FloatField(default=0)
    rules = models.JSONField(default=list)

    class Meta:
        db_table = "alerting_group_state"


class AlertState(models.TextChoices):
    PENDING = "pending"
    FIRING = "firing"
    INACTIVE = "inactive"


class Alert(models.Model):
    """One alert of one rule: a label set the rule's expression returned. Resolved alerts are
    kept for 15 minutes, as Prometheus keeps them, to be sent to Alertmanager as resolved."""

    group_key = models.CharField(max_length=1000)
    rule_name = models.CharField(max_length=400)
    fingerprint = models.CharField(max_length=64)
    labels = models.JSONField()
    annotations = models.JSONField(default=dict)
    state = models.CharField(max_length=10, choices=AlertState.choices)
    value = models.FloatField()
    active_at = models.DateTimeField()
    fired_at = models.DateTimeField(null=True)
    resolved_at = models.DateTimeField(null=True)
    keep_firing_since = models.DateTimeField(null=True)
    last_sent_at = models.DateTimeField(null=True)

    class Meta:
        db_table = "alerting_alert"
        constraints = [
            models.UniqueConstraint(
                fields=["group_key", "rule_name", "fingerprint"], name="alerting_alert_unique"
            )
        ]


class Notification(models.Model):
    """An alert waiting to reach one Alertmanager: the newest payload per (url, alert) only,
    so a queue that waited through an outage sends each alert's latest state once."""

    url = models.CharField(max_length=1000)
    fingerprint = models.CharField(max_length=64)
    payload = models.JSONField()
    queued_at = models.DateTimeField()

    class Meta:
        db_table = "alerting_notification"
        constraints = [
            models.UniqueConstraint(
                fields=["url", "fingerprint"], name="alerting_notification_unique"
            )
        ]
        indexes = [models.Index(fields=["url", "queued_at"], name="alerting_notification_queue")]
