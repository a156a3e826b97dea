"""The comparison harness proved on the reference alone: Prometheus against itself.

Every query of queries.yml must pass against the same Prometheus (the reference's form on both
sides), every query must be valid PromQL there in both its forms, and each one not marked
`empty` must find data: a misspelt name or label would otherwise pass as "both empty".
"""

from __future__ import annotations

import dataclasses
import time

import pytest

from tests.promql.compare import Endpoint, compare, queries_load, request

pytestmark = pytest.mark.reference

STEP = 60
MIN_QUERIES = 170


def window(dataset) -> dict:
    """The range compared: the last hours of the dataset (every 1 h window is full), and
    instant times off the step grid, one of them within the last minute of data."""
    return {
        "start": dataset.start + 3600,
        "end": dataset.end,
        "step": STEP,
        "times": (dataset.start + 5413.25, dataset.start + 7829, dataset.end - 37),
    }


def test_reference_serves_every_series_of_the_dataset(promql_dataset, reference_prometheus):
    dataset = promql_dataset
    assert reference_prometheus.samples == sum(len(s) for *_, s in dataset.prometheus_series())
    # Regexes over names are fine here: the reference is asked about itself.
    for when in (dataset.start + 3600, (dataset.start + dataset.end) / 2, dataset.end):
        answer = reference_prometheus.query('count({__name__=~".+"})', time=when)
        assert answer["status"] == "success", answer
        (sample,) = answer["data"]["result"]
        assert int(sample["value"][1]) == dataset.prometheus_series_at(when), when
    names = reference_prometheus.query('count by (__name__) ({__name__=~".+"})', time=dataset.end)
    served = {s["metric"]["__name__"] for s in names["data"]["result"]}
    assert served >= {n for n in dataset.names() if n != "demo_intermittent_metric"}
    assert "demo_cpu_usage_seconds_total__increments" in served


def test_every_query_passes_against_the_reference_itself(promql_dataset, reference_prometheus):
    cases = queries_load()
    assert len(cases) >= MIN_QUERIES
    assert len({c.query for c in cases}) == len(cases), "a query is listed twice"
    prometheus = Endpoint(reference_prometheus.url)
    # Against itself, the reference's form on both sides: Prometheus's own increase() is
    # extrapolated, so the `query` form of a counter pair is not the same series of numbers.
    mirrored = [dataclasses.replace(c, query=c.reference_query, reference=None) for c in cases]
    began = time.monotonic()
    summary = compare(prometheus, prometheus, mirrored, **window(promql_dataset))
    elapsed = time.monotonic() - began
    assert summary.counts()["pass"] == len(cases), summary.report()
    assert summary.pass_rate == 1.0
    assert elapsed < 45, f"{len(cases)} queries took {elapsed:.1f} s"


def _range(prometheus: Endpoint, query: str, dataset) -> tuple[int, dict]:
    spec = window(dataset)
    form = {"query": query, "start": spec["start"], "end": spec["end"], "step": spec["step"]}
    answer = request(prometheus, "/api/v1/query_range", form)
    return answer.status, answer.body


def test_every_query_is_valid_and_finds_data_where_expected(promql_dataset, reference_prometheus):
    prometheus = Endpoint(reference_prometheus.url)
    problems = []
    for case in queries_load():
        forms = {case.query, case.reference_query}
        for query in forms:
            status, body = _range(prometheus, query, promql_dataset)
            if case.should_fail:
                if status not in (400, 422) or body.get("status") != "error":
                    problems.append(f"{query}: expected a refusal, got {status}")
                continue
            if status != 200:
                problems.append(f"{query}: {status} {body.get('error')}")
                continue
            found = bool(body["data"]["result"])
            if query == case.reference_query and found == case.empty:
                problems.append(f"{query}: {'data' if found else 'no data'}, empty={case.empty}")
    assert not problems, "\n".join(problems)


def test_prometheus_own_increase_is_not_the_exact_one(promql_dataset, reference_prometheus):
    """Asked `increase`/`rate` itself, Prometheus extrapolates to the window's edges (and has no
    answer for a window with one sample): the comparator tells that from the exact sums, which
    is why the counter pairs carry a `reference`."""
    prometheus = Endpoint(reference_prometheus.url)
    pairs = [c for c in queries_load() if c.reference]
    summary = compare(prometheus, prometheus, pairs, **window(promql_dataset))
    counts = summary.counts()
    assert counts["fail"] >= 0.9 * len(pairs), summary.report()
    assert counts["error"] == counts["unsupported"] == 0, summary.report()
    shipped = next(
        o for o in summary.outcomes if o.case.query == "increase(demo_items_shipped_total[10m])"
    )
    assert shipped.status == "fail"
    exact = shipped.detail.rsplit("expected ", 1)[1]
    assert float(exact).is_integer(), shipped.detail  # whole items, where Prometheus has fractions


def test_counter_pairs_name_the_increments():
    """The `reference` of a counter's rate/increase asks for `__increments`, which the
    service does not have, and the query itself never does."""
    pairs = [c for c in queries_load() if c.reference]
    assert len(pairs) >= 40
    for case in pairs:
        assert "__increments" in case.reference, case
        assert "__increments" not in case.query, case
    assert all("__increments" not in c.query for c in queries_load())
