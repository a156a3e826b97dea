"""A gunicorn worker SIGKILLed in the middle of a write that holds an Idempotency-Key."""

from __future__ import annotations

import threading
import time

import psutil
import pytest

from .harness import DB_NAME, Stack, wait_until
from .ledger import Ledger
from .reporting import Promises

pytestmark = pytest.mark.fault(timeout=90)

# A retry with the same key must succeed this soon after the worker died.
KEY_FREE_SECONDS = 10


def _worker_waiting_on_a_lock(stack: Stack, monitor) -> psutil.Process | None:
    """The gunicorn worker whose database session is waiting on a lock, if any."""
    ports = {
        row[0]
        for row in monitor.execute(
            "SELECT client_port FROM pg_stat_activity "
            "WHERE datname = %s AND wait_event_type = 'Lock'",
            [DB_NAME],
        )
    }
    for worker in stack.gunicorn_workers():
        try:
            if any(c.laddr and c.laddr.port in ports for c in worker.net_connections("tcp")):
                return worker
        except psutil.Error:
            continue
    return None


@pytest.mark.parametrize(
    ("respond_async", "table"),
    # Each write waits on the table it writes first after claiming its key: held by a lock, the
    # request is in flight for as long as the test needs.
    [(False, "metric_points"), (True, "ingest_batches")],
    ids=["sync", "async"],
)
def test_killed_worker_frees_the_key_for_a_retry(start_stack, respond_async: bool, table: str):
    stack = start_stack()
    ledger = Ledger(stack.base_url, stack.api_key, retry_for=KEY_FREE_SECONDS)
    promises = Promises(ledger)
    ledger.write()  # the metric and its series exist: the write goes straight to the table
    write = ledger.new_write(respond_async=respond_async)
    with stack.pg.connect() as monitor, stack.pg.connect(autocommit=False) as locker:
        locker.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
        first = threading.Thread(target=ledger.attempt, args=(write,), daemon=True)
        first.start()
        worker = wait_until(
            lambda: _worker_waiting_on_a_lock(stack, monitor),
            timeout=10,
            what=f"a gunicorn worker waiting on the lock on {table}",
        )
        worker.kill()
        killed = time.monotonic()
        locker.rollback()
        first.join(15)

    promises.check(
        write.attempts and write.attempts[0].status is None,
        f"the killed request gets no answer (else the kill missed it): "
        f"{write.attempts[0].describe() if write.attempts else 'it never ended'}",
    )
    ledger.send(write)  # the client's retries, with the same key
    promises.check(
        write.succeeded and write.final.ended - killed <= KEY_FREE_SECONDS,
        f"a retry with the same key succeeds within {KEY_FREE_SECONDS} s of the worker's death: "
        f"{len(write.attempts) - 1} retries over {write.final.ended - killed:.1f} s, last "
        f"{write.final.describe()}",
    )
    promises.assert_kept_with_exact_ledger(stack.pg, settle=30)
