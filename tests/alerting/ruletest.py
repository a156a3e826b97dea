"""Rule unit tests in `promtool test rules` format, run through promtool and through the
service's evaluator over the same input series at the same evaluation times.

promtool starts its series at Unix time 0; the service stores them from `base` (a recent whole
hour: the store takes points within days of now), so every time below is `base` + the test's
offset, and ALERTS_FOR_STATE (a Unix time) is compared less `base`. Series whose name ends in
`_total` are counters: the service stores their increments (a drop is a reset, as Prometheus
reads it), Prometheus their running totals, written as the test file gives them.
"""

from __future__ import annotations

import math
import shutil
import subprocess
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from alerting.evaluation import group_evaluate
from alerting.models import Alert, AlertState
from alerting.rules import duration_seconds, rules_load
from metrics.services import PointInput, points_ingest
from promql.queries import query_instant
from promql.values import NAME, Vector
from tests.promql.promqltest import series_line, series_values

TESTDATA = Path(__file__).parent / "testdata"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"


def promtool_test(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(  # noqa: S603 - promtool, the test file of this checkout
        [PROMTOOL, "test", "rules", path.name],
        cwd=path.parent,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@dataclass
class Found:
    """What the service gave: firing alerts per (alertname, eval offset in ms), and expression
    samples per (expr, eval offset)."""

    alerts: dict[tuple[str, int], list[tuple[dict, dict]]] = field(default_factory=dict)
    samples: dict[tuple[str, int], list[tuple[dict, float]]] = field(default_factory=dict)


def _ms(text: Any) -> int:
    return round(duration_seconds(str(text)) * 1000)


def _points(test: dict, base: datetime, interval_ms: int) -> list[PointInput]:
    points = []
    for entry in test.get("input_series") or []:
        labels, _ = series_line(entry["series"])
        pairs = dict(labels)
        name = pairs.pop(NAME)
        counter = name.endswith("_total")
        previous = None
        for index, value in enumerate(series_values(str(entry["values"]))):
            if value is None:
                continue
            when = base + timedelta(milliseconds=index * interval_ms)
            if counter:
                increment = value if previous is None or value < previous else value - previous
                previous = value
                points.append(PointInput("counter", name, increment, when, pairs))
            else:
                points.append(PointInput("value", name, value, when, pairs))
    return points


def service_run(test_file: Path, base: datetime, settings: Any) -> tuple[dict, Found]:
    """Load the file's series, evaluate its rule groups at every evaluation time up to the
    last one the file asks about, and collect what the service says at those times."""
    document = yaml.safe_load(test_file.read_text())
    (test,) = document["tests"]  # one test group per file: the store is not cleared between
    eval_ms = _ms(document.get("evaluation_interval", "1m"))
    interval_ms = _ms(test.get("interval", document.get("evaluation_interval", "1m")))
    settings.ALERTING_EXTERNAL_LABELS = test.get("external_labels") or {}
    groups = rules_load(
        [str(test_file.parent / name) for name in document["rule_files"]],
        default_interval_s=eval_ms / 1000,
    )
    points = _points(test, base, interval_ms)
    for start in range(0, len(points), 1000):
        points_ingest(points=points[start : start + 1000])

    alert_cases = test.get("alert_rule_test") or []
    expr_cases = test.get("promql_expr_test") or []
    last = max(_ms(case["eval_time"]) for case in [*alert_cases, *expr_cases])
    found = Found()
    for offset in range(0, last + 1, eval_ms):
        for group in groups:
            outcome = group_evaluate(group, tick=base + timedelta(milliseconds=offset))
            assert outcome.evaluated and not outcome.errors, outcome
        for case in alert_cases:
            at = _ms(case["eval_time"])
            if offset <= at < offset + eval_ms:  # promtool: the evaluation at or just before
                firing = Alert.objects.filter(rule_name=case["alertname"], state=AlertState.FIRING)
                found.alerts[(case["alertname"], at)] = [(a.labels, a.annotations) for a in firing]
    for case in expr_cases:
        at = _ms(case["eval_time"])
        value, _ = query_instant(
            query=case["expr"], time_s=(base + timedelta(milliseconds=at)).timestamp()
        )
        assert isinstance(value, Vector)
        samples = []
        for labels, values, present in zip(value.labels, value.values, value.present, strict=True):
            if present[0]:
                number = float(values[0])
                if dict(labels).get(NAME) == "ALERTS_FOR_STATE":
                    number -= base.timestamp()
                samples.append((dict(labels), number))
        found.samples[(case["expr"], at)] = samples
    return test, found


def _key(labels: dict) -> tuple:
    return tuple(sorted(labels.items()))


def differences(test: dict, found: Found) -> list[str]:
    """Every expectation of the test file the service's answers do not meet."""
    problems = []
    for case in test.get("alert_rule_test") or []:
        at = _ms(case["eval_time"])
        name = case["alertname"]
        expected = sorted(
            (
                _key({**{k: str(v) for k, v in (alert.get("exp_labels") or {}).items()}, "alertname": name}),
                _key({k: str(v) for k, v in (alert.get("exp_annotations") or {}).items()}),
            )
            for alert in case.get("exp_alerts") or []
        )  # fmt: skip
        got = sorted((_key(labels), _key(annotations)) for labels, annotations in found.alerts[(name, at)])  # fmt: skip
        if expected != got:
            problems.append(f"{name} at {case['eval_time']}: expected {expected}, got {got}")
    for case in test.get("promql_expr_test") or []:
        at = _ms(case["eval_time"])
        expected = sorted(
            (_key(dict(series_line(sample["labels"])[0])), float(sample["value"]))
            for sample in case.get("exp_samples") or []
        )
        got = sorted((_key(labels), value) for labels, value in found.samples[(case["expr"], at)])
        same = len(expected) == len(got) and all(
            e[0] == g[0] and math.isclose(e[1], g[1], rel_tol=1e-12, abs_tol=1e-12)
            for e, g in zip(expected, got, strict=True)
        )
        if not same:
            problems.append(
                f"{case['expr']} at {case['eval_time']}: expected {expected}, got {got}"
            )
    return problems
