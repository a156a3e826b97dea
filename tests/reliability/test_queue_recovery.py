"""A Celery worker SIGKILLed mid-drain, then the broker flushed, with 1,250 batches acknowledged:
on Redis (FLUSHDB) and on RabbitMQ (the queue purged)."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import pytest

from .harness import RabbitMQServer, Stack, wait_until
from .ledger import Ledger
from .reporting import Promises

pytestmark = pytest.mark.fault(timeout=220)

# More than two sweeps of 500 stay pending at the flush, so a sweeper capped at 500 per 30 s
# cannot have them all stored within a minute, while workers draining some 25-60 single-point
# batches a second here can.
BATCHES = 1250
RECOVERY_SECONDS = 60
SWEEP_INTERVAL_SECONDS = 30  # glowing_fiesta/celery.py, metrics-batches-sweep
# The worker drains this long (or this many batches) before it is killed; the flush comes just
# before a sweep, so that recovery starts at once and takes the sweeper's and the workers' time,
# not beat's phase.
DRAIN_SECONDS = 3
DRAIN_BATCHES = 200
FLUSH_BEFORE_SWEEP_SECONDS = 2
WORKER_BOOT_SECONDS = 6


def _states(conn) -> dict[str, int]:
    return dict(conn.execute("SELECT state, count(*) FROM ingest_batches GROUP BY 1").fetchall())


def _next_sweep(stack: Stack, *, not_before: float) -> float:
    """When (time.time()) beat sends its next sweep at or after `not_before`: beat sends the first
    one SWEEP_INTERVAL_SECONDS after it starts, and then every SWEEP_INTERVAL_SECONDS."""
    beat = next(s for s in stack.services if s.name == "beat")
    line = wait_until(
        lambda: next(
            (x for x in beat.log_path.read_text().splitlines() if "beat: Starting" in x), None
        ),
        timeout=30,
        what="beat to start",
    )
    started = datetime.fromisoformat(json.loads(line)["time"]).timestamp()
    sweep = started + SWEEP_INTERVAL_SECONDS
    while sweep < not_before:
        sweep += SWEEP_INTERVAL_SECONDS
    return sweep


def _flush(stack: Stack) -> None:
    """Every message on the broker lost at once."""
    if isinstance(stack.broker, RabbitMQServer):
        stack.broker.purge(stack.env["CELERY_QUEUE"])
    else:
        stack.redis.client().flushdb()


@pytest.mark.parametrize("broker", ["redis", "rabbitmq"])
def test_killed_worker_and_flushed_broker_lose_no_batch(start_stack, broker: str):
    # Stale pending batches are sent again after 5 s (QUEUE_STALE_SECONDS' minimum).
    stack = start_stack(worker=False, broker=broker)
    ledger = Ledger(stack.base_url, stack.api_key)
    promises = Promises(ledger)
    with ThreadPoolExecutor(6) as pool:
        list(pool.map(lambda _: ledger.write(respond_async=True), range(BATCHES)))
    accepted = [w for w in ledger.writes if w.final.status == 202]
    assert len(accepted) == BATCHES, f"every write is accepted at first: {ledger.summary()}"

    lead = WORKER_BOOT_SECONDS + DRAIN_SECONDS + FLUSH_BEFORE_SWEEP_SECONDS
    flush_at = _next_sweep(stack, not_before=time.time() + lead) - FLUSH_BEFORE_SWEEP_SECONDS
    time.sleep(max(0.0, flush_at - DRAIN_SECONDS - WORKER_BOOT_SECONDS - time.time()))
    with stack.pg.connect() as conn:
        worker = stack.start_worker()
        wait_until(
            lambda: time.time() >= flush_at or _states(conn).get("done", 0) >= DRAIN_BATCHES,
            timeout=lead + 30,
            what="the flush moment",
        )
        drained = _states(conn).get("done", 0)
        worker.kill()
        _flush(stack)
        flushed = time.monotonic()
        pending = BATCHES - _states(conn).get("done", 0)
        stack.start_worker()
        deadline = flushed + RECOVERY_SECONDS
        while time.monotonic() < deadline and set(_states(conn)) - {"done"}:
            time.sleep(0.5)
        took = time.monotonic() - flushed
        states = _states(conn)
    assert drained, "the worker was killed before it drained anything: the test missed its point"
    left = sum(n for state, n in states.items() if state != "done")
    promises.check(
        not left,
        f"every acknowledged batch is stored within {RECOVERY_SECONDS} s of a worker kill and a "
        f"broker flush, recovery bounded by worker throughput and not by the sweeper: of "
        f"{pending} pending at the flush, {left} were not stored after {took:.0f} s, by state "
        f"{states}",
    )
    promises.assert_kept_with_exact_ledger(stack.pg, settle=1)
