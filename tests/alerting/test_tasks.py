"""The beat schedule of the rules: present only with rule files, at ALERTING_TICK_SECONDS.
(The tasks themselves run for real in test_restart.py.)"""

from __future__ import annotations

from glowing_fiesta.celery import beat_schedule


def test_the_rules_are_scheduled_only_when_rule_files_are_set(settings):
    settings.RULE_FILES = []
    assert not {name for name in beat_schedule(settings) if name.startswith("alerting")}
    settings.RULE_FILES = ["/etc/rules/*.yml"]
    settings.ALERTING_TICK_SECONDS = 3
    schedule = beat_schedule(settings)
    evaluate = schedule["alerting-rules-evaluate"]
    assert (evaluate["task"], evaluate["schedule"], evaluate["options"]) == (
        "alerting.rules_evaluate", 3.0, {"expires": 3},
    )  # fmt: skip
    assert schedule["alerting-notifications-send"]["task"] == "alerting.notifications_send"
