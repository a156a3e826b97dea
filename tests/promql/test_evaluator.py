"""The evaluator against Prometheus's own PromQL test scripts (tests/promql/testdata/).

Each script's cases run on series held in memory; a case of a construct this service does not
evaluate (native histograms, staleness markers, experimental functions) is skipped by the reader
and counted. The floor per script makes a change that quietly skips more cases fail.
"""

from __future__ import annotations

import pytest

from tests.promql import promqltest

# Cases each script must run and pass (the rest are native histograms, staleness markers or
# experimental functions; docs/PROMQL.md lists them).
PASSING = {
    "aggregators.test": 129,
    "at_modifier.test": 77,
    "collision.test": 2,
    "functions.test": 262,
    "histograms.test": 54,
    "literals.test": 20,
    "operators.test": 108,
    "range_queries.test": 11,
    "selectors.test": 31,
    "subquery.test": 32,
    "trig_functions.test": 18,
}


@pytest.mark.parametrize("script", sorted(PASSING))
def test_prometheus_test_script(script: str) -> None:
    passed = 0
    failures = []
    for case in promqltest.cases(promqltest.TESTDATA / script):
        try:
            promqltest.run(case)
        except promqltest.Skip:
            continue
        except AssertionError as exc:
            failures.append(str(exc)[:400])
            continue
        passed += 1
    assert not failures, "\n".join(failures)
    assert passed >= PASSING[script]


def test_a_wrong_answer_is_caught() -> None:
    """The reader itself: a case whose expected value is changed must fail."""
    source = promqltest.MemorySource()
    source.add((("__name__", "x"),), 0, 1.0)
    case = promqltest.Case("inline", 1, "x * 2", 0, 0, 1000, expected=["{} 3"], source=source)
    with pytest.raises(AssertionError, match=r"2\.0 != 3\.0"):
        promqltest.run(case)
    case.expected = ["{} 2"]
    promqltest.run(case)
