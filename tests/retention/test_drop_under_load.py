"""Dropping a large expired day while points keep being written: writes do not stall."""

import json
import logging
import statistics
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection

from glowing_fiesta.logging import JsonFormatter
from metrics.services import PointInput, points_ingest
from retention.services import retention_apply

from .helpers import partition_exists

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("clean_point_tables"),
    pytest.mark.slow,
]

# One busy day. Loaded server-side in a few seconds on a 2-core machine (generate_series).
DAY_ROWS = 1_000_000
# The writer starts a single-point write every WRITE_EVERY seconds whatever the previous one
# took, and measures each from the moment it was due: a stall of the parent table then shows
# in every write that should have happened during it, not in one slow write alone.
WRITE_EVERY = 0.02
P99_LIMIT_MS = 100.0
PARENT_LOCK_LIMIT_MS = 50.0
# Bounds the test whatever happens to the retention run.
WRITER_DEADLINE_S = 120.0


def _load_day(day) -> None:
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    with connection.cursor() as cursor:
        cursor.execute("SET statement_timeout = '120s'")
        cursor.execute("SELECT gf_ensure_day_partitions('metric_points', %s, %s)", [day, day])
        cursor.execute(
            """
            INSERT INTO metric_points (metric_id, series_id, value, recorded_at)
            SELECT 1 + g %% 10, 1 + g %% 100, g, %s + g * interval '86 milliseconds'
            FROM generate_series(0, %s - 1) AS g
            """,
            [start, DAY_ROWS],
        )
        cursor.execute("SET statement_timeout = DEFAULT")


def test_writes_keep_their_latency_while_a_million_row_day_is_dropped(now, settings, caplog):
    old_day = (now - timedelta(days=settings.RETENTION_DAYS + 2)).date()
    _load_day(old_day)
    points_ingest(points=[PointInput("counter", "during.drop", 1.0, datetime.now(UTC))])
    caplog.set_level(logging.INFO, logger="retention")

    latencies_ms: list[float] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def write() -> None:
        try:
            due = time.perf_counter()
            deadline = due + WRITER_DEADLINE_S
            while not stop.is_set() and due < deadline:
                time.sleep(max(0.0, due - time.perf_counter()))
                points_ingest(points=[PointInput("counter", "during.drop", 1.0, datetime.now(UTC))])
                latencies_ms.append((time.perf_counter() - due) * 1000)
                due += WRITE_EVERY
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()  # the thread's own connection

    writer = threading.Thread(target=write)
    writer.start()
    time.sleep(0.5)  # the writer is at its pace before the drop starts
    started = time.perf_counter()
    try:
        counts = retention_apply(now=now)
    finally:
        time.sleep(0.3)
        stop.set()
        writer.join(WRITER_DEADLINE_S + 10)
    run_s = time.perf_counter() - started

    assert errors == []
    assert counts["metric_points"] == DAY_ROWS
    assert not partition_exists("metric_points", old_day)
    # Every write that was started was stored.
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM metric_points p JOIN metrics m ON m.id = p.metric_id"
            " WHERE m.name = 'during.drop'"
        )
        assert cursor.fetchone()[0] == len(latencies_ms) + 1
    # The writer ran all through the drop (which takes a second or more for a million rows).
    assert len(latencies_ms) >= (run_s + 0.8) / WRITE_EVERY * 0.5
    p99 = statistics.quantiles(latencies_ms, n=100, method="inclusive")[98]
    assert p99 < P99_LIMIT_MS, (p99, max(latencies_ms), run_s)
    logged = json.loads(
        JsonFormatter().format(next(r for r in caplog.records if r.name == "retention"))
    )
    assert f"metric_points_{old_day:%Y%m%d}" in logged["dropped_partitions"]
    assert logged["parent_lock_ms"] < PARENT_LOCK_LIMIT_MS
