"""Rule evaluation against the reference: every rule unit test under testdata/ passes in
`promtool test rules` (Prometheus 2.42's own evaluator), and the service's evaluator, over the
same input series at the same evaluation times, fires the same alerts with the same labels and
rendered annotations, and records the same series."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.alerting.ruletest import TESTDATA, differences, promtool_test, service_run
from tests.helpers import truncate_point_tables

pytestmark = pytest.mark.django_db(transaction=True)

TEST_FILES = sorted(TESTDATA.glob("*_test.yml"))


@pytest.fixture
def base() -> datetime:
    """A whole hour three hours ago: inside the write window, the tests last under an hour."""
    return datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)


@pytest.fixture(autouse=True)
def _empty_points():
    truncate_point_tables()
    yield
    truncate_point_tables()


def test_there_are_at_least_twenty_cases():
    cases = sum(path.read_text().count("eval_time:") for path in TEST_FILES)
    assert cases >= 20, cases


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
@pytest.mark.parametrize("path", TEST_FILES, ids=lambda p: p.stem)
def test_promtool_passes_the_rule_tests(path: Path):
    result = promtool_test(path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.mark.parametrize("path", TEST_FILES, ids=lambda p: p.stem)
def test_the_service_fires_what_promtool_fires(path: Path, base, settings):
    test, found = service_run(path, base, settings)
    assert differences(test, found) == []


def test_a_wrong_expectation_is_caught(base, settings):
    test, found = service_run(TESTDATA / "for_test.yml", base, settings)
    # InstanceDown's firing alert at 5m, expected a minute early (it is still pending then).
    early = dict(test["alert_rule_test"][2], eval_time="4m")
    assert len(differences({**test, "alert_rule_test": [early]}, found)) == 1
    # The same alert with its annotation changed by one character.
    changed = dict(test["alert_rule_test"][2])
    changed["exp_alerts"] = [dict(changed["exp_alerts"][0], exp_annotations={"summary": "x"})]
    assert len(differences({**test, "alert_rule_test": [changed]}, found)) == 1


# Where Prometheus's extrapolated increase differs from the service's exact one: the values
# promtool expects (and passes), and the service's, per expression.
DIFFERENCES = TESTDATA / "differences" / "extrapolation_test.yml"
EXACT = {"job:requests:increase150s": 30.0, "job:started:increase5m": 130.0}


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_where_prometheus_extrapolates_the_service_answers_the_exact_increase(base, settings):
    result = promtool_test(DIFFERENCES)
    assert result.returncode == 0, result.stdout + result.stderr
    test, found = service_run(DIFFERENCES, base, settings)
    problems = differences(test, found)
    assert len(problems) == len(EXACT), problems
    for (expr, _), samples in found.samples.items():
        assert [value for _, value in samples] == [EXACT[expr]], expr


def test_a_group_another_process_is_evaluating_is_left_to_it(base, settings, tmp_path):
    import psycopg
    from django.db import connection

    from alerting import storage
    from alerting.evaluation import group_evaluate
    from alerting.rules import file_groups
    from glowing_fiesta import locks

    path = tmp_path / "g.yml"
    path.write_text("groups: [{name: g, rules: [{record: r, expr: vector(1)}]}]")
    (group,) = file_groups(str(path), default_interval_s=60)
    db = connection.settings_dict
    other = psycopg.connect(
        host=db["HOST"], port=db["PORT"] or None, user=db["USER"], dbname=db["NAME"],
        password=db["PASSWORD"] or None, autocommit=True,
    )  # fmt: skip
    try:
        key = storage._group_lock_key(group.key)
        other.execute("SELECT pg_advisory_lock(%s, %s)", [locks.RULE_GROUP_NAMESPACE, key])
        assert not group_evaluate(group, tick=base).evaluated
        other.execute("SELECT pg_advisory_unlock(%s, %s)", [locks.RULE_GROUP_NAMESPACE, key])
        assert group_evaluate(group, tick=base).evaluated
        assert not group_evaluate(group, tick=base).evaluated  # the same tick: never twice
    finally:
        other.close()
