"""The service's PromQL answers against a real Prometheus on the same data (tests/promql/
queries.yml, from the compliance templates and dashboard-style expressions).

The dataset goes to the service through its batch endpoint (counters as increments) and to
Debian's prometheus by backfilled blocks (counters as running totals); every query is asked of
both as a range query over the dataset, at a step Grafana would use, and as instant queries.
"""

from __future__ import annotations

import math

import pytest

from tests.promql.compare import Endpoint, compare, queries_load
from tests.promql.dataset import dataset_load
from tests.security.conftest import HTTPS

pytestmark = [pytest.mark.reference, pytest.mark.server]

# Queries that may fail, each named in docs/PROMQL.md with why.
PASS_RATE_FLOOR = 0.95


@pytest.mark.parametrize("step", [60, 15])
def test_answers_match_the_reference_prometheus(
    start_gunicorn, api_key, promql_dataset, reference_prometheus, step
):
    _, raw_key = api_key
    server = start_gunicorn()
    assert (
        dataset_load(server.url, raw_key, promql_dataset, headers=HTTPS)
        == promql_dataset.point_count()
    )
    # Grafana rounds start and end to the step; the first 15 minutes are left out so that
    # every 10-minute window is full on both sides.
    start = math.ceil((promql_dataset.start + 900) / step) * step
    end = math.floor(promql_dataset.end / step) * step
    ours = Endpoint(server.url, {"X-API-Key": raw_key, **HTTPS})
    reference = Endpoint(reference_prometheus.url, {})
    summary = compare(
        ours,
        reference,
        queries_load(),
        start=start,
        end=end,
        step=step,
        times=(end, start + 3600.5),
    )
    print(summary.report())
    assert summary.pass_rate >= PASS_RATE_FLOOR, summary.report()
