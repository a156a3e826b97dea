"""Compaction of closed days: every answer the same before and after, through the real APIs;
delete and retention over compacted days; the command, the task and a killed command."""

import json
import logging
import os
import random
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, transaction
from django.test import override_settings

from glowing_fiesta import locks
from glowing_fiesta.celery import beat_schedule
from metrics import partitions, storage
from metrics.compaction import compactable_before, points_compact
from metrics.models import Metric
from metrics.services import PointInput, points_ingest
from retention.services import retention_apply
from tests.helpers import ROOT, wait_for
from tests.metrics.test_delete_api import purge_all
from tests.processes import process_env

pytestmark = pytest.mark.django_db

NOW = datetime.now(UTC)
# The last day compaction takes, and the first it leaves raw: adjacent, so one range spans both.
COMPACTED = datetime.combine(compactable_before(NOW) - timedelta(days=1), datetime.min.time(), UTC)
RAW = COMPACTED + timedelta(days=1)
ZONES = ("UTC", "Asia/Kathmandu", "America/New_York")
AGGREGATIONS = ("sum", "avg", "min", "max", "count", "rate", "p50", "p90", "p95", "p99")


# One series-hour written at a regular interval, within the minute buckets' span: its minute
# indexes are the ones a compacted row leaves out (NULL for 0, 1, 2, ...).
REGULAR_TAGS = {"host": "a", "region": "eu"}
REGULAR_HOUR = COMPACTED + timedelta(hours=22)


def dataset(seed: int = 7) -> None:
    """Two series-rich metrics from 18:00 of the compacted day to 06:00 of the raw one: points
    at irregular seconds (several in a minute, some at equal times), values with two decimals,
    random floats, large integers and both zeros, written in batches of mixed minutes."""
    rng = random.Random(seed)
    points = []
    start = COMPACTED + timedelta(hours=18)
    for host in ("a", "b", "c"):
        for region in ("eu", "us"):
            tags = {"host": host, "region": region}
            at = start
            level = rng.uniform(0, 100)
            while at < RAW + timedelta(hours=6):
                level += rng.uniform(-3, 3)
                kind = rng.random()
                if kind < 0.6:
                    value = round(level, 2)
                elif kind < 0.8:
                    value = rng.random() * 1e6
                elif kind < 0.95:
                    value = float(rng.randrange(10**13))
                else:
                    value = 0.0
                points.append(PointInput("value", "cpu.load", value, at, tags))
                if rng.random() < 0.1:  # another point at the same instant
                    points.append(PointInput("value", "cpu.load", value + 1.5, at, tags))
                points.append(PointInput("counter", "jobs.done", float(rng.randrange(5)), at, tags))
                regular = tags == REGULAR_TAGS
                if regular and REGULAR_HOUR <= at < REGULAR_HOUR + timedelta(hours=1):
                    at += timedelta(seconds=20)  # a scrape: every minute of the hour holds points
                    continue
                step = timedelta(
                    seconds=rng.choice((7, 13, 20, 41, 95)),
                    microseconds=rng.choice((0, 250_000, 17)),
                )
                at = REGULAR_HOUR if regular and at < REGULAR_HOUR < at + step else at + step
    rng.shuffle(points)
    for k in range(0, len(points), 700):
        points_ingest(points=points[k : k + 700])


def aggregation_answers(client, names=("cpu.load", "jobs.done"), aggregations=AGGREGATIONS) -> dict:
    """Every interval x aggregation x zone x tag filter (and a grouped, filled variant)."""
    answers = {}
    spans = {
        "minute": (RAW - timedelta(hours=3), RAW + timedelta(hours=2)),
        "hour": (COMPACTED, RAW + timedelta(days=1)),
        "day": (COMPACTED - timedelta(days=1), RAW + timedelta(days=2)),
    }
    for name in names:
        for interval, (start, end) in spans.items():
            for aggregation in aggregations:
                if (aggregation == "rate") != (name == "jobs.done") and aggregation != "sum":
                    continue  # the counter for what is its own (rate), the gauge for the rest
                for zone in ZONES:
                    for tags in ({}, {"tag": "host:a"}, {"group_by": "region", "fill": "previous"}):
                        params = {
                            "interval": interval,
                            "aggregation": aggregation,
                            "tz": zone,
                            "from": start.isoformat(),
                            "to": end.isoformat(),
                            **tags,
                        }
                        response = client.get(f"/api/metrics/{name}", params)
                        assert response.status_code == 200, response.content
                        answers[json.dumps(params, sort_keys=True) + name] = response.content
    return answers


def promql_answers(client) -> dict:
    answers = {}
    s = COMPACTED.timestamp() + 18 * 3600
    queries = (
        "cpu_load",
        'cpu_load{host="a"}',
        "sum by (region) (cpu_load)",
        "max_over_time(cpu_load[5m])",
        "rate(jobs_done[5m])",
        "increase(jobs_done[1h])",
        "jobs_done",
        "sum(rate(jobs_done[1m]))",
    )
    for query in queries:
        for start, end, step in (
            (s, s + 12 * 3600, 60),
            (s, s + 12 * 3600, 900),
            (s + 3600, s + 7200, 15),
        ):
            response = client.post(
                "/api/v1/query_range", {"query": query, "start": start, "end": end, "step": step}
            )
            assert response.status_code == 200, response.content
            answers[(query, start, step)] = response.content
        response = client.get("/api/v1/query", {"query": query, "time": s + 5 * 3600 + 37})
        assert response.status_code == 200, response.content
        answers[(query, "instant")] = response.content
    return answers


def discovery_answers(client) -> dict:
    return {
        path: client.get(path).content
        for path in ("/api/metrics", "/api/series?metric=cpu.load", "/api/tags")
    }


def compacted_days() -> list:
    return [row[0] for row in storage.compacted_days()]


def day_totals(day: datetime) -> tuple[int, float]:
    """Count and sum (in a fixed order) of the day's points, whatever their form."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*), sum(value ORDER BY series_id, recorded_at, id) FROM gf_points("
            " ARRAY(SELECT id FROM metrics)::bigint[], %s, %s) WHERE recorded_at < %s",
            [day, day + timedelta(days=1), day + timedelta(days=1)],
        )
        return cursor.fetchone()


@pytest.fixture
def reader(make_api_client):
    return make_api_client(scopes=["read"])


def test_every_answer_is_the_same_after_its_day_is_compacted(reader):
    dataset()
    before = aggregation_answers(reader)
    before_promql = promql_answers(reader)
    before_discovery = discovery_answers(reader)
    totals = day_totals(COMPACTED)

    result = points_compact(now=NOW)

    assert result.days == [COMPACTED.date()]  # the raw day is within the kept days
    assert compacted_days() == [COMPACTED.date()]
    assert result.points == totals[0] > 4000
    raw, minute, compact = storage.day_tables(COMPACTED.date())
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass(%s), to_regclass(%s)", [raw, minute])
        assert cursor.fetchone() == (None, None)
        cursor.execute(
            "SELECT count(*), count(scale), count(*) FILTER (WHERE mminutes IS NULL),"
            f" count(tstep) FROM {compact}"
        )
        rows, scaled, regular, stepped = cursor.fetchone()
    assert rows == 6 * 6 * 2  # 6 hours x 6 series x 2 metrics
    assert 0 < scaled < rows  # the counters scale; the gauge's random floats keep their text
    assert regular >= 2  # the regular series-hour of each metric (the others skip minutes)
    assert 0 < stepped < rows  # its times as one step where no point repeats an instant
    assert day_totals(COMPACTED) == totals
    with connection.cursor() as cursor:  # lz4 wherever the server has it, as the parent has
        cursor.execute(
            "SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'"
        )
        lz4 = cursor.fetchone()[0]
        cursor.execute(
            "SELECT array_agg(DISTINCT attcompression) FROM pg_attribute"
            " WHERE attrelid = ANY(ARRAY[%s::regclass, 'metric_points_compact'::regclass])"
            " AND attname IN ('t', 'v', 'msums')",
            [compact],
        )
        assert cursor.fetchone()[0] == (["l"] if lz4 else [""])
    after = aggregation_answers(reader)
    assert len(after) == len(before) == (9 + 2) * 3 * 3 * 3
    assert [k for k in before if before[k] != after[k]] == []
    assert promql_answers(reader) == before_promql
    assert discovery_answers(reader) == before_discovery
    # A second run has nothing left to do.
    assert points_compact(now=NOW).days == []


def test_a_percentile_that_sees_its_day_compacted_midway_runs_again_and_answers_the_same(
    reader, monkeypatch
):
    """A compaction that commits between the percentile's read of the compacted days and its
    read of the points (here: run right after that read) makes the query run again."""
    from metrics import selectors

    dataset()
    params = {
        "interval": "hour", "aggregation": "p90", "tz": "Asia/Kathmandu", "group_by": "region",
        "from": (COMPACTED + timedelta(hours=18)).isoformat(),
        "to": (RAW + timedelta(hours=6)).isoformat(),
    }  # fmt: skip
    before = reader.get("/api/metrics/cpu.load", params)
    assert before.status_code == 200
    reads = []
    days_read = selectors._compacted_days

    def compacted_midway(cursor, bounds):
        days = days_read(cursor, bounds)
        reads.append(days)
        if len(reads) == 1:
            assert points_compact(now=NOW).days == [COMPACTED.date()]
        return days

    monkeypatch.setattr(selectors, "_compacted_days", compacted_midway)
    after = reader.get("/api/metrics/cpu.load", params)
    assert after.status_code == 200
    assert after.content == before.content
    # Read before, after (changed), and after the second run (unchanged).
    assert reads == [[], [COMPACTED.date()], [COMPACTED.date()]]


def test_delete_of_a_metric_with_compacted_days_leaves_the_others_and_nothing_of_it(
    reader, make_api_client
):
    dataset()
    points_compact(now=NOW)
    before = aggregation_answers(reader, names=("jobs.done",))
    cpu = Metric.objects.get(name="cpu.load")
    assert make_api_client(scopes=["admin"]).delete("/api/metrics/cpu.load").status_code == 204
    assert purge_all() == 1
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM metric_points_compact WHERE metric_id = %s", [cpu.id])
        assert cursor.fetchone()[0] == 0
        cursor.execute("SELECT count(*) FROM metric_points_compact")
        assert cursor.fetchone()[0] == 6 * 6
    assert aggregation_answers(reader, names=("jobs.done",)) == before
    assert reader.get("/api/metrics/cpu.load").status_code == 404
    # Written again, the name starts from nothing on the compacted day too.
    points_ingest(points=[PointInput("value", "cpu.load", 1.0, COMPACTED + timedelta(hours=20))])
    body = reader.get(
        "/api/metrics/cpu.load",
        {"interval": "day", "aggregation": "count", "from": COMPACTED.isoformat(),
         "to": (RAW + timedelta(days=1)).isoformat()},
    ).json()  # fmt: skip
    assert [b["value"] for b in body["buckets"]] == [1, 0]


@override_settings(RETENTION_DAYS=9)
def test_retention_removes_a_compacted_day_as_it_removes_a_raw_one(reader):
    dataset()
    later = NOW + timedelta(days=1)  # the compacted day expires, the raw one in part

    class Undo(Exception):
        pass

    with pytest.raises(Undo), transaction.atomic():
        raw_counts = retention_apply(now=later)
        raw_answers = aggregation_answers(reader, aggregations=("sum", "max", "p90"))
        raise Undo
    partitions.partitions_forget()

    points_compact(now=NOW)
    counts = retention_apply(now=later)
    assert counts["metric_points_compact"] == 6 * 6 * 2  # rows: the compacted day's
    # The compacted day's points went as its rows; the raw day's expired part as before.
    with connection.cursor() as cursor:
        cursor.execute("SELECT points FROM metric_compacted_days")
        compacted_points = cursor.fetchone()[0]
    assert counts["metric_points"] + compacted_points == raw_counts["metric_points"]
    assert aggregation_answers(reader, aggregations=("sum", "max", "p90")) == raw_answers
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass(%s)", [storage.day_tables(COMPACTED.date())[2]])
        assert cursor.fetchone()[0] is None


def test_dry_run_lists_the_days_and_changes_nothing():
    points_ingest(points=[PointInput("value", "x", 1.0, COMPACTED + timedelta(hours=1))])
    points_ingest(points=[PointInput("value", "x", 2.0, RAW + timedelta(hours=1))])
    out = StringIO()
    call_command("compact_points", "--dry-run", f"--now={NOW.isoformat()}", stdout=out)
    assert out.getvalue().splitlines() == ["would compact 1 day(s)", f"  {COMPACTED.date()}"]
    assert compacted_days() == []
    out = StringIO()
    call_command("compact_points", f"--now={NOW.isoformat()}", stdout=out)
    assert out.getvalue().startswith("compacted 1 day(s), 1 points in")
    assert compacted_days() == [COMPACTED.date()]
    # A day later, the raw day is closed too.
    call_command("compact_points", f"--now={(NOW + timedelta(days=1)).isoformat()}", stdout=out)
    assert compacted_days() == [COMPACTED.date(), RAW.date()]


@pytest.mark.parametrize("bad", ["yesterday", "2026-01-02T00:00:00"])
def test_command_refuses_a_now_that_is_not_an_aware_iso_time(bad):
    with pytest.raises(CommandError, match="--now"):
        call_command("compact_points", f"--now={bad}")


def test_a_day_whose_minute_rollups_disagree_with_its_points_stays_raw():
    # A negative and a positive zero in one minute: the rollup keeps the first, min() may not.
    at = COMPACTED + timedelta(hours=3)
    points_ingest(points=[PointInput("value", "z", 0.0, at)])
    points_ingest(points=[PointInput("value", "z", -0.0, at + timedelta(seconds=1))])
    with connection.cursor() as cursor:
        cursor.execute("UPDATE metric_rollup_minute SET min = '-0' WHERE bucket = %s", [at])
    assert points_compact(now=NOW).days == []
    assert compacted_days() == []
    assert day_totals(COMPACTED)[0] == 2


def test_the_beat_schedules_a_daily_compaction(settings):
    entry = beat_schedule(settings)["metrics-points-compact"]
    assert entry["task"] == "metrics.points_compact"
    assert entry["schedule"].hour == {2}


@pytest.mark.worker
def test_a_worker_runs_the_compaction_task(start_worker):
    from metrics.tasks import points_compact_task

    points_ingest(points=[PointInput("value", "x", 1.0, COMPACTED + timedelta(hours=1))])
    worker = start_worker()
    points_compact_task.apply_async(kwargs={"now": NOW.isoformat()})
    wait_for(compacted_days, timeout=60, what="the day compacted", log=worker.log)
    assert compacted_days() == [COMPACTED.date()]
    wait_for(lambda: "day compacted" in worker.log(), timeout=30, what="the worker's log")


# --- killed at any moment -------------------------------------------------------------------


def _lock_held() -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory'"
            " AND classid = %s AND objid = %s AND granted)",
            [locks.NAMESPACE, locks.COMPACTION_RUN],
        )
        return cursor.fetchone()[0]


def _compaction(env, day) -> subprocess.Popen:
    """`manage.py compact_points` at a `now` that makes `day` the last day it may compact."""
    now = datetime.combine(day, datetime.min.time(), UTC) + timedelta(
        days=partitions.PARTITION_DAYS_BACK + 1, hours=12
    )
    return subprocess.Popen(  # noqa: S603 - our own interpreter and command
        [sys.executable, str(ROOT / "manage.py"), "compact_points", f"--now={now.isoformat()}"],
        env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def _day_state(day) -> tuple[bool, bool]:
    """(marked compacted, raw partition present)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass(%s) IS NOT NULL", [storage.day_tables(day)[0]])
        return day in compacted_days(), cursor.fetchone()[0]


@pytest.mark.django_db(transaction=True)
def test_compaction_killed_at_random_moments_never_loses_or_doubles_a_point(
    clean_point_tables, queue_name
):
    """20 SIGKILLs of a real command while it holds a day in its transaction (its lock). A run
    that commits before its kill moves the test on to an identical next day."""
    rng = random.Random(27)
    first = COMPACTED - timedelta(days=20)
    days = [(first + timedelta(days=i)).date() for i in range(10)]
    points = [
        PointInput("value", "k", round(rng.uniform(0, 50), 1), first + timedelta(seconds=9 * n),
                   {"s": str(n % 8)})
        for n in range(9_600)
    ]  # fmt: skip
    for k in range(0, len(points), 2000):
        points_ingest(points=points[k : k + 2000])
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT gf_ensure_day_partitions('metric_points', %s, %s)", [days[0], days[-1]]
        )
        cursor.execute(
            "SELECT gf_ensure_day_partitions('metric_rollup_minute', %s, %s)", [days[0], days[-1]]
        )
        for i in range(1, len(days)):
            cursor.execute(
                "INSERT INTO metric_points (metric_id, series_id, value, recorded_at)"
                " SELECT metric_id, series_id, value, recorded_at + %s * interval '1 day'"
                " FROM metric_points WHERE recorded_at < %s",
                [i, first + timedelta(days=1)],
            )
            cursor.execute(
                "INSERT INTO metric_rollup_minute SELECT series_id, bucket + %s * interval '1 day',"
                " count, sum, min, max FROM metric_rollup_minute WHERE bucket < %s",
                [i, first + timedelta(days=1)],
            )
    totals = {day: day_totals(datetime.combine(day, datetime.min.time(), UTC)) for day in days}
    assert totals[days[0]][0] == 9_600 and len(set(totals.values())) == 1
    env = process_env(queue_name, SELF_METRICS="false")

    def lock_or_exit(process):
        return lambda: _lock_held() or process.poll() is not None

    # How long a run holds its lock: the first day, compacted whole.
    calibration = _compaction(env, days[0])
    wait_for(lock_or_exit(calibration), timeout=60, what="the lock", interval=0.005)
    held = time.monotonic()
    wait_for(lambda: not _lock_held(), timeout=120, what="the calibration", interval=0.005)
    hold = time.monotonic() - held
    assert calibration.wait(timeout=120) == 0, calibration.stdout.read()
    assert _day_state(days[0]) == (True, False)

    current, interrupted = 1, 0
    for _ in range(20):
        day = days[current]
        process = _compaction(env, day)
        wait_for(lock_or_exit(process), timeout=60, what="the lock", interval=0.005)
        time.sleep(rng.uniform(0, hold * 0.7))
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
        # The killed client's backend finds out at its next statement and rolls back.
        wait_for(lambda: not _lock_held(), timeout=60, what="the killed run's end")
        marked, raw_exists = _day_state(day)
        assert marked != raw_exists  # raw or compacted, never both nor neither
        for other in days:
            assert day_totals(datetime.combine(other, datetime.min.time(), UTC)) == totals[other]
        if marked:
            current += 1  # it committed before the kill
        else:
            interrupted += 1
    assert interrupted >= 10, f"{interrupted} of 20 kills fell inside the transaction"
    final = _compaction(env, days[-1])
    assert final.wait(timeout=120) == 0, final.stdout.read()
    assert [_day_state(day) for day in days] == [(True, False)] * len(days)
    for day in days:
        assert day_totals(datetime.combine(day, datetime.min.time(), UTC)) == totals[day]


@pytest.mark.django_db(transaction=True)
def test_a_day_whose_tables_stay_locked_is_left_raw_and_taken_by_the_next_run(
    clean_point_tables, monkeypatch, caplog
):
    import threading

    import psycopg

    from tests.processes import worker_database_url

    caplog.set_level(logging.WARNING, logger="metrics.compaction")
    points_ingest(points=[PointInput("value", "busy", 1.0, COMPACTED + timedelta(hours=2))])
    monkeypatch.setattr(storage, "SWAP_ATTEMPTS", 3)
    held, release = threading.Event(), threading.Event()

    def reader() -> None:
        # A long read of the points holds the parent table: the drop cannot have its lock.
        with psycopg.connect(worker_database_url()) as conn:
            conn.execute("SELECT count(*) FROM metric_points")
            held.set()
            release.wait(60)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        assert held.wait(30)
        started = time.monotonic()
        assert points_compact(now=NOW).days == []
        # Three waits of 50 ms and two pauses: the reads and writes of other days that queued
        # behind the drop waited no longer than one of them.
        assert time.monotonic() - started < 10
    finally:
        release.set()
        thread.join()
    assert "day left raw: tables busy" in caplog.text
    assert compacted_days() == [] and day_totals(COMPACTED)[0] == 1
    assert points_compact(now=NOW).days == [COMPACTED.date()]
    assert day_totals(COMPACTED)[0] == 1
