"""Runs on their own connections, with committed data: these tests commit for real."""

import threading
from datetime import timedelta

import psycopg
import pytest
from django.db import connection

from retention import storage as retention_storage
from retention.services import retention_apply

from .helpers import ingest, partition_exists, point_times

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("clean_point_tables"),
]

SECOND = timedelta(seconds=1)


def test_two_concurrent_runs_neither_fail_nor_delete_twice(now, settings):
    cutoff = now - timedelta(days=settings.RETENTION_DAYS)
    old = cutoff - timedelta(days=2)
    ingest(*(old + n * SECOND for n in range(50)))
    ingest(*(cutoff - (n + 1) * SECOND for n in range(30)))
    ingest(*(cutoff + (n + 1) * SECOND for n in range(20)))
    start = threading.Barrier(2)
    results: list[dict] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            start.wait()
            results.append(retention_apply(now=now))
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()  # each thread had its own connection

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert errors == []
    assert len(results) == 2
    # Whether the second run was skipped ({}) or came after the first (nothing left), the
    # rows were counted once between them.
    assert sum(r.get("metric_points", 0) for r in results) == 80
    assert sum(r.get("metric_rollup_minute", 0) for r in results) == 2
    assert point_times() == [cutoff + (n + 1) * SECOND for n in range(20)]
    assert not partition_exists("metric_points", old.date())


def test_a_busy_table_has_its_expired_day_emptied_and_dropped_on_the_next_run(
    now, settings, monkeypatch
):
    monkeypatch.setattr(retention_storage, "DROP_LOCK_TIMEOUT_MS", 100)
    old = now - timedelta(days=settings.RETENTION_DAYS + 2)
    ingest(old, old + SECOND)
    db = connection.settings_dict
    with psycopg.connect(
        dbname=db["NAME"], user=db["USER"], host=db["HOST"], port=db["PORT"]
    ) as reader:
        # A long read holds the parent table: dropping a partition would wait for it.
        reader.execute("LOCK TABLE ONLY metric_points IN ACCESS SHARE MODE")
        counts = retention_apply(now=now)
        assert counts["metric_points"] == 2
        assert point_times() == []
        assert partition_exists("metric_points", old.date())
        reader.rollback()

    assert retention_apply(now=now)["metric_points"] == 0
    assert not partition_exists("metric_points", old.date())
