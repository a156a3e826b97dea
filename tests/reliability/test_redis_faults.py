"""The broker hung by SIGSTOP, or shut down and started again: Redis (broker, rate limits and key
cache at once; started empty) or a RabbitMQ node (the broker alone; its durable queue survives)."""

from __future__ import annotations

import time

import pytest

from .harness import wait_until
from .ledger import Ledger
from .reporting import Promises

pytestmark = pytest.mark.fault(timeout=170)

# A request may wait this long on a broken broker: its connect and socket timeouts, one retry.
BROKER_WAIT_SECONDS = 5


@pytest.mark.parametrize(
    ("broker", "fault", "seconds"),
    [
        # Longer than gunicorn's 30 s worker timeout: a request that waits on the broker is
        # killed.
        ("redis", "SIGSTOP", 35),
        ("redis", "shutdown", 10),
        # On RabbitMQ the hang is the case its own settings are for (publish read timeouts in
        # the web process, heartbeats in the worker); a restart was checked above with Redis,
        # and the queue lost at once in test_queue_recovery.py.
        ("rabbitmq", "SIGSTOP", 35),
    ],
)
def test_broker_fault_keeps_the_ledger_exact(start_stack, broker: str, fault: str, seconds: int):
    stack = start_stack(broker=broker)
    ledger = Ledger(stack.base_url, stack.api_key, retry_for=seconds + 30, request_timeout=40)
    promises = Promises(ledger)
    # More async clients than gunicorn workers: if a request waits on the hung broker, nothing
    # else is served.
    with ledger.probing("/healthz"), ledger.load(sync=2, asynchronous=4):
        wait_until(lambda: len(ledger.writes) >= 10, timeout=20, what="writes before the fault")
        began = time.monotonic()
        if fault == "SIGSTOP":
            stack.broker.pause()
        else:
            stack.broker.shutdown()
        time.sleep(seconds)  # the fault itself: its length is the point
        ended = time.monotonic()
        if fault == "SIGSTOP":
            stack.broker.resume()
        else:
            stack.broker.start()
        wait_until(lambda: time.monotonic() > ended + 5, timeout=30, what="load after the fault")

    promises.healthz_check(began, ended, f"/healthz answers while {broker} is down ({fault})")
    slow = [
        a
        for a in ledger.attempts()
        if a.ended > began
        and a.started < ended
        and (a.status is None or a.seconds > BROKER_WAIT_SECONDS)
    ]
    promises.check(
        not slow,
        f"a hung or missing broker costs a request at most {BROKER_WAIT_SECONDS} s (and the "
        f"service answers before gunicorn's timeout): {len(slow)} requests during the {fault} "
        f"took longer, e.g. {slow[0].describe() if slow else ''}",
    )
    promises.assert_kept_with_exact_ledger(stack.pg, settle=60)
