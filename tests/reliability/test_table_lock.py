"""A 20 s ACCESS EXCLUSIVE lock on metric_points (a migration, a manual VACUUM FULL) under load."""

from __future__ import annotations

import time

import pytest

from .harness import wait_until
from .ledger import PROBLEM, Ledger
from .reporting import Promises

pytestmark = pytest.mark.fault(timeout=170)

LOCK_SECONDS = 20
# A write behind a lock is refused within the lock timeout ("a second or two"), well before the
# 5 s statement timeout.
LOCK_ANSWER_SECONDS = 2.5


def test_table_lock_answers_503_quickly_and_keeps_every_202(start_stack):
    stack = start_stack()
    ledger = Ledger(stack.base_url, stack.api_key, retry_for=LOCK_SECONDS + 20)
    promises = Promises(ledger)
    with ledger.probing("/healthz"), ledger.load(sync=2, asynchronous=2, pace=0.2):
        wait_until(lambda: len(ledger.writes) >= 10, timeout=20, what="writes before the lock")
        with stack.pg.connect(autocommit=False) as locker:
            locker.execute("LOCK TABLE metric_points IN ACCESS EXCLUSIVE MODE")
            locked = time.monotonic()
            time.sleep(LOCK_SECONDS)  # the lock itself: its length is the point
            unlocked = time.monotonic()
            locker.rollback()
        wait_until(lambda: time.monotonic() > unlocked + 3, timeout=30, what="load after it")

    sync_during = [
        a
        for a in ledger.attempts(respond_async=False)
        if locked + 0.2 < a.started < unlocked - LOCK_ANSWER_SECONDS
    ]
    promises.check(
        len(sync_during) >= 3, f"too few sync writes behind the lock: {len(sync_during)}"
    )
    wrong = [
        a
        for a in sync_during
        if not (
            a.status == 503
            and a.retry_after
            and PROBLEM in a.content_type
            and a.seconds <= LOCK_ANSWER_SECONDS
        )
    ]
    promises.check(
        not wrong,
        f"a sync write behind a lock answers 503 problem+json with Retry-After within the lock "
        f"timeout ({LOCK_ANSWER_SECONDS} s): {len(wrong)} of {len(sync_during)} did not, e.g. "
        f"{wrong[0].describe() if wrong else ''}",
    )
    async_during = [
        a for a in ledger.attempts(respond_async=True) if a.ended > locked and a.started < unlocked
    ]
    refused = [a for a in async_during if a.status != 202]
    promises.check(
        async_during and not refused,
        f"async writes are accepted while metric_points is locked (they only queue): "
        f"{len(refused)} of {len(async_during)} were not, e.g. "
        f"{refused[0].describe() if refused else 'none was sent'}",
    )
    promises.healthz_check(
        locked, unlocked, "/healthz never waits on the database", " during the lock"
    )
    promises.assert_kept_with_exact_ledger(stack.pg, settle=60)
