import json
import logging
import uuid
from datetime import UTC, datetime, timedelta
from io import StringIO

import psycopg
import pytest
from django.core.management import call_command
from django.db import connection

from glowing_fiesta import locks
from glowing_fiesta.logging import JsonFormatter
from metrics.models import (
    IngestBatch,
    MetricPoint,
    RollupDay,
    RollupHour,
    RollupMinute,
)
from protocols.models import CumulativeStream
from retention.services import retention_apply
from tests.helpers import wait_for

from .helpers import buckets, ingest, partition_exists, point_times, row_counts

pytestmark = pytest.mark.django_db

SECOND = timedelta(seconds=1)


def test_a_point_one_second_past_the_cutoff_is_gone_and_one_second_inside_stays(now, settings):
    cutoff = now - timedelta(days=settings.RETENTION_DAYS)
    ingest(cutoff - SECOND, value=1.0)
    ingest(cutoff + SECOND, value=2.0)

    counts = retention_apply(now=now)

    assert point_times() == [cutoff + SECOND]
    assert MetricPoint.objects.get().value == 2.0
    # The minute bucket ending at the cutoff is expired; the one starting there is untouched.
    assert buckets("metric_rollup_minute") == [cutoff]
    assert RollupMinute.objects.get().sum == 2.0
    assert counts["metric_points"] == 1
    assert counts["metric_rollup_minute"] == 1
    # Hour and day rollups are kept for ROLLUP_RETENTION_DAYS, longer than the points.
    assert counts["metric_rollup_hour"] == counts["metric_rollup_day"] == 0
    assert len(buckets("metric_rollup_hour")) == 2


def test_a_point_exactly_at_the_cutoff_stays(now, settings):
    cutoff = now - timedelta(days=settings.RETENTION_DAYS)
    ingest(cutoff)
    assert retention_apply(now=now)["metric_points"] == 0
    assert point_times() == [cutoff]


def test_a_whole_expired_day_goes_by_dropping_its_partitions(now, settings):
    cutoff = now - timedelta(days=settings.RETENTION_DAYS)
    old_day = (cutoff - timedelta(days=2)).date()
    old_noon = datetime(old_day.year, old_day.month, old_day.day, 12, tzinfo=UTC)
    ingest(old_noon, old_noon + SECOND, old_noon + timedelta(hours=3))
    ingest(cutoff + SECOND)
    assert partition_exists("metric_points", old_day)
    assert partition_exists("metric_rollup_minute", old_day)

    counts = retention_apply(now=now)

    assert not partition_exists("metric_points", old_day)
    assert not partition_exists("metric_rollup_minute", old_day)
    assert counts["metric_points"] == 3  # counted before the drop
    assert counts["metric_rollup_minute"] == 2
    assert point_times() == [cutoff + SECOND]
    # The partition that straddles the cutoff stays, holding what is still within retention.
    assert partition_exists("metric_points", cutoff.date())


def test_an_empty_expired_partition_is_dropped_too(now, settings):
    old_day = (now - timedelta(days=settings.RETENTION_DAYS + 30)).date()
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT gf_ensure_day_partitions('metric_points', %s, %s)", [old_day, old_day]
        )
    assert retention_apply(now=now)["metric_points"] == 0
    assert not partition_exists("metric_points", old_day)


def test_a_day_left_detached_by_an_interrupted_run_is_counted_and_dropped_by_the_next(
    now, settings
):
    old = now - timedelta(days=settings.RETENTION_DAYS + 3)
    ingest(old, old + SECOND)
    name = f"metric_points_{old:%Y%m%d}"
    with connection.cursor() as cursor:
        # What a run leaves when it stops between detaching the partition and dropping it.
        cursor.execute(f"ALTER TABLE metric_points DETACH PARTITION {name}")

    assert retention_apply(now=now, dry_run=True)["metric_points"] == 2
    counts = retention_apply(now=now)

    assert counts["metric_points"] == 2
    assert not partition_exists("metric_points", old.date())
    assert retention_apply(now=now)["metric_points"] == 0


def test_a_dropped_day_can_be_written_again_in_the_same_process(
    now, settings, django_capture_on_commit_callbacks
):
    old = now - timedelta(days=settings.RETENTION_DAYS + 3)
    with django_capture_on_commit_callbacks(execute=True):
        ingest(old)  # the process now remembers that the day's partition exists
    retention_apply(now=now)
    assert not partition_exists("metric_points", old.date())
    ingest(old)  # the process must not believe the partition still exists
    assert point_times() == [old]


def test_days_inside_the_write_window_are_emptied_not_dropped(now, settings):
    # With a retention shorter than the 8 days back whose partitions are kept for late writes,
    # an expired day keeps its partition and loses only its rows.
    settings.RETENTION_DAYS = 2
    settings.ROLLUP_RETENTION_DAYS = 2
    old = now - timedelta(days=4)
    ingest(old, now - timedelta(days=2) + SECOND)

    counts = retention_apply(now=now)

    assert point_times() == [now - timedelta(days=2) + SECOND]
    assert partition_exists("metric_points", old.date())
    assert counts["metric_points"] == 1


def test_hour_and_day_rollups_expire_only_when_the_whole_bucket_is_past_the_cutoff(settings):
    settings.RETENTION_DAYS = 10
    settings.ROLLUP_RETENTION_DAYS = 30
    now = datetime.now(UTC).replace(hour=12, minute=30, second=0, microsecond=0)
    cutoff = now - timedelta(days=30)  # 12:30 on that day
    ingest(
        cutoff - timedelta(days=1),  # day before: its day bucket ends at 00:00, before the cutoff
        cutoff - timedelta(minutes=31),  # hour 11:00-12:00, entirely before the cutoff
        cutoff - SECOND,  # hour 12:00-13:00 straddles the cutoff: kept whole
        cutoff + SECOND,
    )

    counts = retention_apply(now=now)

    hour = cutoff.replace(minute=0)
    day = cutoff.replace(hour=0, minute=0)
    assert buckets("metric_rollup_hour") == [hour]
    assert RollupHour.objects.get().count == 2
    assert buckets("metric_rollup_day") == [day]
    assert RollupDay.objects.get().count == 3
    assert counts["metric_rollup_hour"] == 2
    assert counts["metric_rollup_day"] == 1
    # The points themselves are far past RETENTION_DAYS.
    assert counts["metric_points"] == 4
    assert point_times() == []


def test_partitions_ahead_exist_after_a_run():
    later = datetime.now(UTC) + timedelta(days=40)
    ahead = (later + timedelta(days=8)).date()
    assert not partition_exists("metric_points", ahead)

    retention_apply(now=later)

    assert partition_exists("metric_points", ahead)
    assert partition_exists("metric_rollup_minute", ahead)


def test_idempotency_keys_expire_24_hours_after_their_first_request(api_client, monkeypatch):
    start = datetime.now(UTC).replace(microsecond=0)
    for offset, key in ((0, "old"), (2, "young")):
        monkeypatch.setattr("django.utils.timezone.now", lambda o=offset: start + o * SECOND)
        response = api_client.post(
            "/api/metrics/counter", {"name": "a"}, format="json", headers={"Idempotency-Key": key}
        )
        assert response.status_code == 201
    monkeypatch.undo()

    counts = retention_apply(now=start + timedelta(hours=24) + SECOND)

    assert counts["idempotency_keys"] == 1
    with connection.cursor() as cursor:
        cursor.execute("SELECT key FROM idempotency_keys")
        assert cursor.fetchall() == [("young",)]


def test_running_twice_removes_nothing_the_second_time(now, settings):
    cutoff = now - timedelta(days=settings.RETENTION_DAYS)
    ingest(cutoff - timedelta(days=3), cutoff - SECOND, cutoff + SECOND)
    first = retention_apply(now=now)
    second = retention_apply(now=now)
    assert first["metric_points"] == 2
    assert set(second.values()) == {0}
    assert point_times() == [cutoff + SECOND]


def test_a_run_logs_one_json_line_with_the_rows_deleted_per_table(now, settings, caplog):
    cutoff = now - timedelta(days=settings.RETENTION_DAYS)
    ingest(cutoff - timedelta(days=3), cutoff - SECOND)
    caplog.set_level(logging.INFO, logger="retention")

    counts = retention_apply(now=now)

    records = [r for r in caplog.records if r.name == "retention"]
    assert len(records) == 1
    line = JsonFormatter().format(records[0])
    assert "\n" not in line
    logged = json.loads(line)
    assert logged["message"] == "retention applied"
    assert logged["deleted"] == counts
    assert logged["deleted"]["metric_points"] == 2
    # The write path created the days in between too; all of them lie before the cutoff.
    days = [f"{cutoff - timedelta(days=n):%Y%m%d}" for n in (3, 2, 1)]
    assert logged["dropped_partitions"] == [
        *(f"metric_points_{day}" for day in days),
        *(f"metric_rollup_minute_{day}" for day in days),
    ]


def test_a_naive_now_is_refused():
    with pytest.raises(ValueError, match="timezone-aware"):
        retention_apply(now=datetime(2026, 1, 1))


# --- the command ------------------------------------------------------------------------------


def test_dry_run_prints_what_would_go_and_changes_nothing(now, settings, monkeypatch):
    monkeypatch.setattr("django.utils.timezone.now", lambda: now)
    cutoff = now - timedelta(days=settings.RETENTION_DAYS)
    old = cutoff - timedelta(days=3)
    ingest(old, old + SECOND, cutoff - SECOND, cutoff + SECOND)
    before = row_counts()
    out = StringIO()

    call_command("apply_retention", "--dry-run", stdout=out)

    assert row_counts() == before
    assert partition_exists("metric_points", old.date())
    lines = out.getvalue().splitlines()
    assert lines[0] == "would delete:"
    assert lines[1].split() == ["metric_points", "3"]
    assert lines[2].split() == ["metric_rollup_minute", "2"]
    assert lines[3].split() == ["metric_points_compact", "0"]
    assert lines[4].split() == ["metric_rollup_15m", "0"]
    assert lines[5].split() == ["metric_rollup_hour", "0"]


def test_the_command_deletes_and_prints_the_counts(now, settings, monkeypatch):
    monkeypatch.setattr("django.utils.timezone.now", lambda: now)
    cutoff = now - timedelta(days=settings.RETENTION_DAYS)
    ingest(cutoff - timedelta(days=3), cutoff - SECOND, cutoff + SECOND)
    out = StringIO()

    call_command("apply_retention", stdout=out)

    lines = out.getvalue().splitlines()
    assert lines[0] == "deleted:"
    assert lines[1].split() == ["metric_points", "2"]
    assert point_times() == [cutoff + SECOND]


# --- overlapping runs and busy tables -------------------------------------------------------


def _other_session() -> psycopg.Connection:
    db = connection.settings_dict
    return psycopg.connect(
        dbname=db["NAME"], user=db["USER"], host=db["HOST"], port=db["PORT"], autocommit=True
    )


def test_a_run_while_another_holds_the_lock_is_skipped_and_touches_nothing(now, settings, caplog):
    cutoff = now - timedelta(days=settings.RETENTION_DAYS)
    ingest(cutoff - SECOND)
    caplog.set_level(logging.INFO, logger="retention")
    with _other_session() as other:
        other.execute(
            "SELECT pg_advisory_lock(%s, %s)",
            [locks.NAMESPACE, locks.RETENTION_RUN],
        )
        assert retention_apply(now=now) == {}
    assert point_times() == [cutoff - SECOND]
    assert [r.getMessage() for r in caplog.records if r.name == "retention"] == [
        "retention skipped: another run is in progress"
    ]
    # The lock goes with the other session (once its backend has ended): the next run does the
    # work.
    wait_for(_run_lock_free, timeout=10, what="the closed session's lock to go")
    assert retention_apply(now=now)["metric_points"] == 1


def _run_lock_free() -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) = 0 FROM pg_locks WHERE locktype = 'advisory'"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            " AND classid = %s AND objid = %s",
            [locks.NAMESPACE, locks.RETENTION_RUN],
        )
        return cursor.fetchone()[0]


def test_done_queue_batches_expire_after_the_queue_keep_period_and_others_stay(
    api_key, now, settings
):
    key, _ = api_key
    cutoff = now - timedelta(days=settings.QUEUE_KEEP_DAYS)
    old = cutoff - timedelta(days=30)

    def batch(state, processed_at=None):
        return IngestBatch.objects.create(
            api_key=key, state=state, payload=[], points=0,
            created_at=old, updated_at=old, processed_at=processed_at,
        ).pk  # fmt: skip

    gone = batch("done", cutoff - SECOND)
    kept = [
        batch("done", cutoff + SECOND),
        batch("failed"),
        batch("pending"),
        batch("running"),
    ]

    counts = retention_apply(now=now)

    assert counts["ingest_batches"] == 1
    assert not IngestBatch.objects.filter(pk=gone).exists()
    assert sorted(IngestBatch.objects.values_list("pk", flat=True)) == sorted(kept)


def test_cumulative_streams_silent_for_retention_days_expire(now, settings):
    cutoff = now - timedelta(days=settings.RETENTION_DAYS)
    for name, updated_at in (("old", cutoff - SECOND), ("edge", cutoff), ("young", now)):
        CumulativeStream.objects.create(
            key=uuid.uuid4(), name=name, last_ns=1, last_value=1.0, updated_at=updated_at
        )

    counts = retention_apply(now=now)

    assert counts["cumulative_streams"] == 1
    assert sorted(CumulativeStream.objects.values_list("name", flat=True)) == ["edge", "young"]
