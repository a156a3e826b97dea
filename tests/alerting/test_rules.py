"""Rule files: what is accepted (what promtool accepts, in PromQL the service runs), what is
refused and how it is named, the commands that check and reload them."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from alerting.models import RuleSet
from alerting.rules import RuleError, duration_seconds, file_groups, rules_load
from alerting.rulesets import ruleset_groups
from tests.alerting.ruletest import TESTDATA

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "deploy" / "rules" / "example.yml"

GOOD = """
groups:
  - name: g
    interval: 30s
    rules:
      - record: job:up:sum
        expr: sum by (job) (up)
      - alert: Down
        expr: up == 0
        for: 5m
        keep_firing_for: 1m
        labels: {severity: page}
        annotations: {summary: "{{ $labels.instance }} down"}
"""


def write(tmp_path: Path, text: str, name: str = "rules.yml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def promtool_check(path: Path) -> bool:
    result = subprocess.run(  # noqa: S603 - promtool on a file of the test's own
        [shutil.which("promtool") or "/usr/bin/promtool", "check", "rules", str(path)],
        capture_output=True,
        check=False,
    )
    return result.returncode == 0


def test_a_good_file_loads_every_field(tmp_path):
    (group,) = file_groups(str(write(tmp_path, GOOD)), default_interval_s=60)
    assert group.name == "g" and group.interval_s == 30
    record, alert = group.rules
    assert (record.kind, record.name, record.expr) == ("record", "job:up:sum", "sum by (job) (up)")
    assert (alert.for_s, alert.keep_firing_for_s, alert.labels) == (300, 60, {"severity": "page"})
    assert group.key == f"{tmp_path / 'rules.yml'};g"


def test_the_default_interval_applies_without_one(tmp_path):
    path = write(tmp_path, "groups: [{name: g, rules: [{record: a, expr: '1'}]}]")
    assert file_groups(str(path), default_interval_s=60)[0].interval_s == 60


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("groups: [{name: g, rules: [{alert: A, expr: 'up =='}]}]", ["rule 'A'", "parse"]),
        ("groups: [{name: g, rules: [{alert: A, expr: 'histogram_count(rate(x[5m]))'}]}]", ["histogram_count", "not supported"]),
        ("groups: [{name: g, rules: [{alert: A, expr: up, annotations: {s: '{{ if $value }}x{{ end }}'}}]}]", ["annotation 's'", "{{if}}"]),
        ("groups: [{name: g, rules: [{alert: A, expr: up, labels: {s: '{{ nosuch $value }}'}}]}]", ["nosuch"]),
        ("groups: [{name: g, rules: [{record: 'bad name', expr: up}]}]", ["invalid recording rule name"]),
        ("groups: [{name: g, rules: [{record: r, expr: up, for: 1m}]}]", ["'for'"]),
        ("groups: [{name: g, rules: [{alert: A, record: r, expr: up}]}]", ["one of 'record' or 'alert'"]),
        ("groups: [{name: g, rules: [{alert: A, expr: up, for: 5 minutes}]}]", ["duration"]),
        ("groups: [{name: g, rules: [{alert: A, expr: up, labels: {'bad-name': x}}]}]", ["bad-name"]),
        ("groups: [{name: g, rules: [{alert: A, expr: up, severity: x}]}]", ["severity"]),
        ("groups: [{name: g, rules: []}, {name: g, rules: []}]", ["repeated"]),
        ("groups: [{name: g, interval: 0s, rules: []}]", ["interval"]),
        ("groups: [{name: g, rules: [{alert: A, expr: 'up[5m]'}]}]", ["instant vector"]),
        ("rules: []", ["'groups'"]),
        ("groups: [{name: g, rules: [{alert: A, expr: up}]]", ["file"]),
    ],
)  # fmt: skip
def test_a_bad_file_is_refused_naming_file_group_rule_and_reason(tmp_path, text, words):
    path = write(tmp_path, text)
    with pytest.raises(RuleError) as caught:
        file_groups(str(path), default_interval_s=60)
    message = str(caught.value)
    assert str(path) in message
    for word in words:
        assert word in message, message


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_what_promtool_accepts_and_the_service_refuses_is_only_unsupported_constructs(tmp_path):
    # promtool accepts both; the service refuses them before they can run.
    for text in (
        "groups: [{name: g, rules: [{alert: A, expr: 'histogram_count(rate(x[5m]))'}]}]",
        "groups: [{name: g, rules: [{alert: A, expr: up, annotations: {s: '{{ if true }}x{{ end }}'}}]}]",
    ):  # fmt: skip
        path = write(tmp_path, text)
        assert promtool_check(path)
        with pytest.raises(RuleError):
            file_groups(str(path), default_interval_s=60)
    # Every rule file of the promtool tests, and the example, load.
    for path in [*TESTDATA.glob("*_rules.yml"), EXAMPLE]:
        assert promtool_check(path)
        assert file_groups(str(path), default_interval_s=60)


def test_durations_as_prometheus_reads_them():
    assert duration_seconds("1h30m") == 5400
    assert duration_seconds("90s") == 90
    assert duration_seconds("1d") == 86400
    assert duration_seconds("500ms") == 0.5
    assert duration_seconds("0") == 0
    for bad in ("", "1x", "m", "30m1h", "1.5m"):
        with pytest.raises(ValueError):
            duration_seconds(bad)


def test_a_glob_matches_files_sorted_and_an_empty_glob_loads_nothing(tmp_path):
    write(tmp_path, GOOD, "b.yml")
    write(tmp_path, GOOD.replace("name: g", "name: h"), "a.yml")
    groups = rules_load([str(tmp_path / "*.yml")], default_interval_s=60)
    assert [(Path(g.file).name, g.name) for g in groups] == [("a.yml", "h"), ("b.yml", "g")]
    assert rules_load([str(tmp_path / "none-*.yml")], default_interval_s=60) == []


def test_check_rules_command_passes_a_good_file_and_fails_naming_the_rule(
    tmp_path, capsys, settings
):
    settings.RULE_FILES = []
    call_command("check_rules")
    assert "no rule files to check" in capsys.readouterr().out
    call_command("check_rules", str(write(tmp_path, GOOD)))
    assert "SUCCESS: 2 rules found" in capsys.readouterr().out
    bad = write(tmp_path, GOOD.replace("up == 0", "up =="), "bad.yml")
    with pytest.raises(CommandError) as caught:
        call_command("check_rules", str(bad))
    assert "FAILED" in str(caught.value) and "group 'g'" in str(caught.value)
    assert "rule 'Down'" in str(caught.value)
    with pytest.raises(CommandError, match="no rule file matches"):
        call_command("check_rules", str(tmp_path / "missing.yml"))


def test_check_rules_exits_1_in_a_real_process(tmp_path):
    bad = write(tmp_path, GOOD.replace("up == 0", "rate(up)"))
    result = subprocess.run(  # noqa: S603
        [sys.executable, "manage.py", "check_rules", str(bad)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "rule 'Down'" in result.stderr


@pytest.mark.django_db
def test_reload_swaps_the_rules_and_a_bad_file_keeps_the_old_ones(tmp_path, settings, capsys):
    path = write(tmp_path, GOOD)
    settings.RULE_FILES = [str(tmp_path / "*.yml")]
    call_command("reload_rules")
    assert "loaded 1 groups, 2 rules" in capsys.readouterr().out
    assert [rule.name for rule in ruleset_groups()[0].rules] == ["job:up:sum", "Down"]
    path.write_text(GOOD.replace("up == 0", "up == 0 +"))
    with pytest.raises(CommandError, match=r"the old ones keep running.*rule 'Down'"):
        call_command("reload_rules")
    assert [rule.name for rule in ruleset_groups()[0].rules] == ["job:up:sum", "Down"]
    assert "rule 'Down'" in RuleSet.objects.get().error
    path.write_text(GOOD.replace("alert: Down", "alert: Gone"))
    call_command("reload_rules")
    assert [rule.name for rule in ruleset_groups()[0].rules] == ["job:up:sum", "Gone"]
    assert RuleSet.objects.get().error == ""
