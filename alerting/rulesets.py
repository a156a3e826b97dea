"""The rules in force: validated files swapped in whole, read by every process."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db import transaction

from .models import Alert, GroupState, RuleSet
from .rules import Group, RuleError, rule_paths, rules_load

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Reload:
    ok: bool
    groups: int
    rules: int
    error: str = ""


def ruleset_reload(*, now: datetime, patterns: list[str] | None = None) -> Reload:
    """Read and validate the rule files (RULE_FILES unless `patterns`), and on success replace
    the rules in force in one update, so every process evaluates either the old or the new set.
    A file that fails validation changes nothing: the old rules keep running, and the error is
    recorded (GET /api/v1/rules shows the old groups; the log says why)."""
    patterns = settings.RULE_FILES if patterns is None else patterns
    try:
        groups = rules_load(patterns, default_interval_s=settings.RULE_EVALUATION_INTERVAL)
    except RuleError as exc:
        with transaction.atomic():
            ruleset, _ = RuleSet.objects.select_for_update().get_or_create(pk=1)
            ruleset.error, ruleset.error_at = str(exc), now
            ruleset.save(update_fields=["error", "error_at"])
        logger.error("rule files refused; the rules in force are kept", extra={"error": str(exc)})
        return Reload(False, 0, 0, str(exc))
    with transaction.atomic():
        ruleset, _ = RuleSet.objects.select_for_update().get_or_create(pk=1)
        ruleset.groups = [group.as_json() for group in groups]
        ruleset.files = rule_paths(patterns)
        ruleset.loaded_at, ruleset.error, ruleset.error_at = now, "", None
        ruleset.save()
        # Groups no longer in the files take their state along, as in Prometheus.
        keys = [group.key for group in groups]
        Alert.objects.exclude(group_key__in=keys).delete()
        GroupState.objects.exclude(key__in=keys).delete()
    count = sum(len(group.rules) for group in groups)
    logger.info("rule files loaded", extra={"groups": len(groups), "rules": count})
    return Reload(True, len(groups), count)


def ruleset_groups() -> list[Group]:
    """The groups in force (none before the first successful load)."""
    ruleset = RuleSet.objects.filter(pk=1).only("groups").first()
    if ruleset is None:
        return []
    return [Group.from_json(data) for data in ruleset.groups]
