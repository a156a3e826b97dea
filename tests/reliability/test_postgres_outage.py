"""PostgreSQL stopped under load (`pg_ctl stop -m immediate`, as a crash would), then started."""

from __future__ import annotations

import time

import pytest

from .harness import wait_until
from .ledger import PROBLEM, Ledger
from .reporting import Promises

pytestmark = pytest.mark.fault(timeout=150)

OUTAGE_SECONDS = 10
RECOVERY_SECONDS = 5


def test_ledger_is_exact_without_faults(start_stack):
    """The harness itself: sync and async writes, single points and batches, all stored once."""
    stack = start_stack()
    ledger = Ledger(stack.base_url, stack.api_key)
    promises = Promises(ledger)
    with ledger.load(sync=2, asynchronous=2):
        wait_until(lambda: len(ledger.writes) >= 40, timeout=30, what="40 writes")
    promises.check(
        all(w.final.status == (202 if w.respond_async else 201) for w in ledger.writes),
        "with no fault every write succeeds at its first attempt",
    )
    promises.assert_kept_with_exact_ledger(stack.pg, settle=30)


def test_database_outage_answers_503_and_recovers_exactly(start_stack):
    stack = start_stack()
    ledger = Ledger(stack.base_url, stack.api_key, retry_for=40)
    promises = Promises(ledger)
    with ledger.probing("/healthz"), ledger.load(sync=2, asynchronous=2):
        wait_until(lambda: len(ledger.writes) >= 10, timeout=20, what="writes before the outage")
        stopped = time.monotonic()
        stack.pg.stop("immediate")
        time.sleep(OUTAGE_SECONDS)  # the outage itself: its length is the point
        restarted = time.monotonic()
        stack.pg.start()
        started = time.monotonic()
        # Load goes on after the restart, to see the service answer 2xx again.
        wait_until(
            lambda: time.monotonic() > started + RECOVERY_SECONDS + 3,
            timeout=30,
            what="load after the restart",
        )

    during = [a for a in ledger.attempts() if a.started > stopped + 0.2 and a.ended < restarted]
    promises.check(len(during) >= 5, f"too few requests during the outage: {len(during)}")
    wrong = [
        a for a in during if not (a.status == 503 and a.retry_after and PROBLEM in a.content_type)
    ]
    promises.check(
        not wrong,
        f"a database outage answers 503 problem+json with Retry-After: {len(wrong)} of "
        f"{len(during)} requests during it did not, e.g. {wrong[0].describe() if wrong else ''}",
    )
    promises.check(
        any(a.status and a.status < 300 and a.ended < started + RECOVERY_SECONDS
            for a in ledger.attempts() if a.started > started),
        f"2xx again within {RECOVERY_SECONDS} s of the restart: none came",
    )  # fmt: skip
    late = [
        a
        for a in ledger.attempts()
        if a.started > started + RECOVERY_SECONDS and (a.status is None or a.status >= 500)
    ]
    promises.check(
        not late,
        f"2xx again within {RECOVERY_SECONDS} s of the restart: {len(late)} requests sent later "
        f"still failed, e.g. {late[0].describe() if late else ''}",
    )
    promises.healthz_check(
        stopped, restarted, "/healthz never touches the database", " during the outage"
    )
    promises.assert_kept_with_exact_ledger(stack.pg)
