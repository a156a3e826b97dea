"""The service through PgBouncer (Debian's 1.18) in transaction mode, DB_PREPARED_STATEMENTS off:
every process (gunicorn, the Celery worker, beat) reaches a private cluster only through a
private PgBouncer whose pool holds fewer server connections than there are processes."""

from __future__ import annotations

import time

import psycopg
import pytest
import requests

from .harness import pgbouncer_bin, wait_until
from .ledger import METRIC, Ledger
from .reporting import Promises

pytestmark = [
    pytest.mark.fault(timeout=180),
    pytest.mark.skipif(pgbouncer_bin() is None, reason="pgbouncer is not installed"),
]


def test_ingest_queries_and_promql_through_pgbouncer_in_transaction_mode(start_stack):
    stack = start_stack(pgbouncer=True, web_workers=3)
    assert stack.env["DATABASE_URL"] == stack.bouncer.url()
    ledger = Ledger(stack.base_url, stack.api_key)
    promises = Promises(ledger)
    with ledger.load(sync=3, asynchronous=2):
        wait_until(lambda: len(ledger.writes) >= 40, timeout=60, what="40 writes")
    promises.check(
        all(w.final.status == (202 if w.respond_async else 201) for w in ledger.writes),
        "through PgBouncer every write succeeds at its first attempt",
    )
    promises.assert_kept_with_exact_ledger(stack.pg, settle=60)

    with stack.pg.connect() as conn:
        (stored,) = conn.execute(
            "SELECT count(*) FROM metric_points p JOIN metrics m ON m.id = p.metric_id"
            " WHERE m.name = %s",
            [METRIC],
        ).fetchone()
        # The service's connections reached PostgreSQL through PgBouncer's pool only.
        servers = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'glowing-fiesta-%'"
        ).fetchone()[0]
    assert stored > 0
    assert 0 < servers <= stack.bouncer.pool_size

    headers = {"X-API-Key": stack.api_key}
    now = time.time()
    response = requests.get(
        f"{stack.base_url}/api/metrics/{METRIC}",
        params={"from": _iso(now - 3600), "to": _iso(now + 3600), "interval": "hour",
                "aggregation": "count"},
        headers=headers, timeout=30,
    )  # fmt: skip
    assert response.status_code == 200, response.text
    assert sum(b["value"] for b in response.json()["buckets"]) == stored
    response = requests.get(
        f"{stack.base_url}/api/v1/query",
        params={"query": f"sum(count_over_time({METRIC.replace('.', '_')}[2h]))",
                "time": str(now + 60)},
        headers=headers, timeout=30,
    )  # fmt: skip
    assert response.status_code == 200, response.text
    assert float(response.json()["data"]["result"][0]["value"][1]) == stored
    response = requests.get(f"{stack.base_url}/api/metrics", headers=headers, timeout=30)
    assert [m["name"] for m in response.json()["results"]] == [METRIC]

    # The role's statement timeout stands in for the startup option PgBouncer drops.
    with psycopg.connect(stack.bouncer.url(), prepare_threshold=None) as conn:
        assert conn.execute("SHOW statement_timeout").fetchone() == ("5s",)


def _iso(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))
