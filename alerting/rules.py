"""Prometheus rule files: read, validated, and turned into the groups the evaluator runs.

The format is Prometheus's (`groups: [{name, interval, limit, rules: [{alert|record, expr,
for, keep_firing_for, labels, annotations}]}]`), checked as `promtool check rules` checks it,
plus what this service needs on top: every expression must be one the evaluator runs (it is
evaluated once over no data, which names any unsupported function or construct), and every
template must stay within templates.py's subset. A RuleError names the file, the group, the
rule and the reason.
"""

from __future__ import annotations

import glob
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from promql.errors import PromQLError
from promql.evaluator import Evaluator, LabelMatcher
from promql.queries import query_parse
from promql.values import Samples

from .templates import TemplateError, template_check

_DURATION = re.compile(
    r"^(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?$"
)
_DURATION_MS = (31_536_000_000, 604_800_000, 86_400_000, 3_600_000, 60_000, 1000, 1)
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_GROUP_KEYS = frozenset({"name", "interval", "limit", "rules"})
_RULE_KEYS = frozenset(
    {"record", "alert", "expr", "for", "keep_firing_for", "labels", "annotations"}
)


class RuleError(ValueError):
    """A rule file that may not run: which file, group and rule, and why."""

    def __init__(self, message: str, *, file: str = "", group: str = "", rule: str = "") -> None:
        where = [f"{name} {value!r}" for name, value in (("file", file), ("group", group), ("rule", rule)) if value]  # fmt: skip
        super().__init__(f"{', '.join(where)}: {message}" if where else message)
        self.file, self.group, self.rule, self.reason = file, group, rule, message


@dataclass(frozen=True)
class Rule:
    kind: str  # "alert" or "record"
    name: str
    expr: str
    for_s: float = 0.0
    keep_firing_for_s: float = 0.0
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Group:
    file: str
    name: str
    interval_s: float
    rules: tuple[Rule, ...]
    limit: int = 0

    @property
    def key(self) -> str:
        """Prometheus's group key: the file and the group's name."""
        return f"{self.file};{self.name}"

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "rules": [asdict(rule) for rule in self.rules]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Group:
        rules = tuple(Rule(**rule) for rule in data["rules"])
        return cls(**{**data, "rules": rules})


def duration_seconds(text: Any) -> float:
    """A Prometheus duration (`1h30m`, `90s`, `0`) in seconds; ValueError otherwise."""
    if not isinstance(text, str) or not text:
        raise ValueError(f"not a valid duration string: {text!r}")
    if text == "0":
        return 0.0
    match = _DURATION.match(text)
    if match is None or not any(match.groups()):
        raise ValueError(f"not a valid duration string: {text!r}")
    ms = sum(int(part) * unit for part, unit in zip(match.groups(), _DURATION_MS, strict=True) if part)  # fmt: skip
    return ms / 1000


class _NoData:
    """A source with no series: the expression runs once, so an unsupported construct shows."""

    def select(self, matchers: list[LabelMatcher], start_ms: int, end_ms: int) -> list[Samples]:
        return []


def expr_check(expr: str) -> None:
    """Raise PromQLError if the expression does not parse or is not one the service runs."""
    node = query_parse(expr)
    type_name = type(node).__name__
    if type_name in ("MatrixSelector", "SubqueryExpr", "StringLiteral"):
        raise PromQLError("invalid rule expression: it must be an instant vector or a scalar")
    evaluator = Evaluator(
        _NoData(),
        start_ms=0,
        end_ms=0,
        step_ms=1000,
        lookback_ms=300_000,
        deadline=time.monotonic() + 5,
    )
    evaluator.evaluate(node)


def _strings(value: Any, what: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"{what} must be a map of names to strings")
    out = {}
    for key, text in value.items():
        if not isinstance(key, str) or not _LABEL_NAME.match(key):
            raise ValueError(f"invalid {what[:-1]} name: {key!r}")
        if isinstance(text, bool) or not isinstance(text, str | int | float):
            raise ValueError(f"{what[:-1]} {key!r} must be a string")
        out[key] = str(text)
    return out


def _rule(raw: Any) -> Rule:
    if not isinstance(raw, dict):
        raise ValueError("a rule must be a map")
    unknown = set(raw) - _RULE_KEYS
    if unknown:
        raise ValueError(f"field {sorted(unknown)[0]} not found in type rulefmt.Rule")
    record, alert = raw.get("record"), raw.get("alert")
    if bool(record) == bool(alert):
        raise ValueError("one of 'record' or 'alert' must be set")
    expr = raw.get("expr")
    if not isinstance(expr, str) or not expr.strip():
        raise ValueError("field 'expr' must be set in rule")
    try:
        expr_check(expr)
    except PromQLError as exc:
        raise ValueError(f"could not parse expression: {exc.message}") from None
    labels = _strings(raw.get("labels"), "labels")
    annotations = _strings(raw.get("annotations"), "annotations")
    if "__name__" in labels:
        raise ValueError("invalid label name: __name__")
    if record:
        for key in ("for", "keep_firing_for", "annotations"):
            if key in raw:
                raise ValueError(f"invalid field '{key}' in recording rule")
        if not isinstance(record, str) or not _METRIC_NAME.match(record):
            raise ValueError(f"invalid recording rule name: {record}")
        return Rule("record", record, expr, labels=labels)
    if not isinstance(alert, str):
        raise ValueError("alert name must be a string")
    for what, templates in (("label", labels), ("annotation", annotations)):
        for key, text in templates.items():
            try:
                template_check(text)
            except TemplateError as exc:
                raise ValueError(f"{what} {key!r}: template: {exc}") from None
    for_s = duration_seconds(raw["for"]) if raw.get("for") is not None else 0.0
    keep = raw.get("keep_firing_for")
    keep_s = duration_seconds(keep) if keep is not None else 0.0
    return Rule("alert", alert, expr, for_s, keep_s, labels, annotations)


def file_groups(path: str, *, default_interval_s: float) -> list[Group]:
    """The groups of one rule file; RuleError naming what is wrong."""
    try:
        text = Path(path).read_text(encoding="utf-8")
        document = yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise RuleError(str(exc).replace("\n", " "), file=path) from None
    if document is None:
        return []
    if not isinstance(document, dict) or set(document) - {"groups"}:
        raise RuleError("a rule file holds one key, 'groups'", file=path)
    raw_groups = document.get("groups") or []
    if not isinstance(raw_groups, list):
        raise RuleError("'groups' must be a list", file=path)
    groups: list[Group] = []
    names: set[str] = set()
    for raw in raw_groups:
        if not isinstance(raw, dict):
            raise RuleError("a group must be a map", file=path)
        name = raw.get("name")
        if not isinstance(name, str) or not name:
            raise RuleError("group name must not be empty", file=path)
        if name in names:
            raise RuleError(f"{name!r}: repeated in the same file", file=path, group=name)
        names.add(name)
        unknown = set(raw) - _GROUP_KEYS
        if unknown:
            raise RuleError(f"field {sorted(unknown)[0]} not found in type rulefmt.RuleGroup", file=path, group=name)  # fmt: skip
        try:
            interval = (
                duration_seconds(raw["interval"])
                if raw.get("interval") is not None
                else default_interval_s
            )
            if interval <= 0:
                raise ValueError("interval must be greater than zero")
            limit = raw.get("limit") or 0
            if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
                raise ValueError("limit must be a whole number")
        except ValueError as exc:
            raise RuleError(str(exc), file=path, group=name) from None
        rules = []
        raw_rules = raw.get("rules") or []
        if not isinstance(raw_rules, list):
            raise RuleError("'rules' must be a list", file=path, group=name)
        for index, raw_rule in enumerate(raw_rules):
            label = ""
            if isinstance(raw_rule, dict):
                label = str(raw_rule.get("alert") or raw_rule.get("record") or "")
            try:
                rules.append(_rule(raw_rule))
            except ValueError as exc:
                raise RuleError(str(exc), file=path, group=name, rule=label or f"#{index + 1}") from None  # fmt: skip
        groups.append(Group(path, name, interval, tuple(rules), limit))
    return groups


def rule_paths(patterns: Iterable[str]) -> list[str]:
    """The files matching the globs, sorted, each once."""
    paths: set[str] = set()
    for pattern in patterns:
        paths.update(p for p in glob.glob(pattern) if Path(p).is_file())
    return sorted(paths)


def rules_load(patterns: Sequence[str], *, default_interval_s: float) -> list[Group]:
    """Every group of every file matching `patterns`; RuleError at the first bad file."""
    groups: list[Group] = []
    for path in rule_paths(patterns):
        groups.extend(file_groups(path, default_interval_s=default_interval_s))
    return groups
