"""A Celery worker SIGKILLed mid-drain, then the broker flushed, with 1,200 batches acknowledged."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from .harness import wait_until
from .ledger import Ledger
from .reporting import Promises

pytestmark = pytest.mark.fault(timeout=200)

# More than two sweeps of 500 are left pending at the flush: a sweeper that sends 500 per 30 s
# cannot have them all stored within a minute.
BATCHES = 1200
DRAINED_BEFORE_KILL = 150
# Every acknowledged batch is stored this soon after the flush: recovery is bounded by the
# workers' throughput (some 50-100 single-point batches a second here), not by the sweeper.
RECOVERY_SECONDS = 60


def _states(conn) -> dict[str, int]:
    return dict(conn.execute("SELECT state, count(*) FROM ingest_batches GROUP BY 1").fetchall())


def test_killed_worker_and_flushed_broker_lose_no_batch(start_stack):
    # Stale pending batches are sent again after 5 s (QUEUE_STALE_SECONDS' minimum).
    stack = start_stack(worker=False)
    ledger = Ledger(stack.base_url, stack.api_key)
    promises = Promises(ledger)
    with ThreadPoolExecutor(6) as pool:
        list(pool.map(lambda _: ledger.write(respond_async=True), range(BATCHES)))
    accepted = [w for w in ledger.writes if w.final.status == 202]
    assert len(accepted) == BATCHES, f"every write is accepted at first: {ledger.summary()}"

    with stack.pg.connect() as conn:
        worker = stack.start_worker()
        drain_started = time.monotonic()
        wait_until(
            lambda: _states(conn).get("done", 0) >= DRAINED_BEFORE_KILL,
            timeout=60,
            what=f"{DRAINED_BEFORE_KILL} batches drained",
        )
        drained = _states(conn).get("done", 0)
        rate = drained / (time.monotonic() - drain_started)
        worker.kill()
        stack.redis.client().flushdb()
        flushed = time.monotonic()
        stack.start_worker()
        deadline = flushed + RECOVERY_SECONDS
        while time.monotonic() < deadline and set(_states(conn)) - {"done"}:
            time.sleep(0.5)
        took = time.monotonic() - flushed
        states = _states(conn)
    left = sum(n for state, n in states.items() if state != "done")
    promises.check(
        not left,
        f"every acknowledged batch is stored within {RECOVERY_SECONDS} s of a worker kill and a "
        f"broker flush (recovery bounded by worker throughput, {rate:.0f} batches/s before the "
        f"kill, not by the sweeper): {left} of {BATCHES} were not after {took:.0f} s, by state "
        f"{states}",
    )
    with stack.pg.connect() as conn:
        promises.ledger_exact(ledger.problems(conn, settle=1))
    promises.assert_kept()
