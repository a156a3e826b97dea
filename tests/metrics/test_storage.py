import json
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection

from metrics import partitions
from metrics.models import Metric, MetricPoint, RollupDay, RollupHour, RollupMinute, Series
from metrics.services import MetricTypeConflict, PointInput, points_ingest
from tests.helpers import truncate_point_tables
from tests.processes import python_run, worker_database_url

pytestmark = pytest.mark.django_db


def _now():
    return datetime.now(UTC)


@pytest.mark.parametrize("days", [0, -7, 7])
def test_points_today_seven_days_ago_and_ahead_are_stored(days):
    when = _now() + timedelta(days=days)
    points = [PointInput("value", "cpu", 1.5, when)] * 3 + [
        PointInput("value", "cpu", 2.0, when)
    ] * 70
    assert points_ingest(points=points) == 73
    assert MetricPoint.objects.filter(recorded_at=when).count() == 73


def test_bucket_hour_is_the_utc_hour_of_recorded_at():
    when = datetime(2026, 1, 1, 0, 0, tzinfo=UTC).replace(
        year=_now().year, month=_now().month, day=_now().day
    )
    when = when.replace(hour=13, minute=47, second=12, microsecond=345)
    points_ingest(points=[PointInput("counter", "hits", 1, when)])
    point = MetricPoint.objects.get()
    assert point.bucket_hour == when.replace(minute=0, second=0, microsecond=0)
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL TIME ZONE 'Asia/Kolkata'")
        cursor.execute(
            "SELECT bucket_hour = date_trunc('hour', recorded_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' FROM metric_points"
        )
        assert cursor.fetchone() == (True,)


def test_rollups_equal_the_raw_points_at_every_resolution():
    base = _now().replace(second=0, microsecond=0) - timedelta(hours=1)
    values = [3.0, -1.0, 10.0, 4.5]
    points_ingest(
        points=[
            PointInput("counter", "c", v, base + timedelta(seconds=i)) for i, v in enumerate(values)
        ]
    )
    points_ingest(points=[PointInput("counter", "c", 100.0, base)])
    for model in (RollupMinute, RollupHour, RollupDay):
        row = model.objects.get()
        assert (row.count, row.sum, row.min, row.max) == (5, 116.5, -1.0, 100.0)


def test_tags_make_separate_series_and_no_tags_is_the_empty_series():
    when = _now()
    points_ingest(
        points=[
            PointInput("value", "lat", 1, when, {"host": "a"}),
            PointInput("value", "lat", 2, when, {"host": "b"}),
            PointInput("value", "lat", 3, when, {}),
            PointInput("value", "lat", 4, when, {"host": "a"}),
        ]
    )
    assert sorted(str(s.tags) for s in Series.objects.all()) == [
        "{'host': 'a'}",
        "{'host': 'b'}",
        "{}",
    ]
    assert Metric.objects.count() == 1


def test_type_conflict_stores_nothing():
    when = _now()
    points_ingest(points=[PointInput("counter", "x", 1, when)])
    with pytest.raises(MetricTypeConflict):
        points_ingest(
            points=[PointInput("value", "new", 1, when), PointInput("value", "x", 1, when)]
        )
    assert list(Metric.objects.values_list("name", flat=True)) == ["x"]
    assert MetricPoint.objects.count() == 1


# Writes single points as a server process does (its own persistent connection) and reports what
# that connection has prepared: after 8 writes, after a point that creates a day's partition, and
# after 2 more writes.
PREPARED_WRITER = """
import json
from datetime import UTC, datetime, timedelta
import django
django.setup()
from django.db import connection
from metrics.services import PointInput, points_ingest

def prepared():
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*), coalesce(sum(generic_plans + custom_plans), 0)"
            " FROM pg_prepared_statements WHERE statement LIKE '%metric_rollup_15m%'"
        )
        return [int(n) for n in cursor.fetchone()]

def write(when):
    points_ingest(points=[PointInput("counter", "prepared", 1.0, when, {"k": "v"})])

now = datetime.now(UTC)
ahead = now + timedelta(days=6)
with connection.cursor() as cursor:
    # The day's partitions exist ahead of time; dropped here so that the write to it below
    # creates them while the statement is prepared.
    cursor.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " JOIN pg_class p ON p.oid = i.inhparent"
        " WHERE p.relname IN ('metric_points', 'metric_rollup_minute')"
        " AND pg_get_expr(c.relpartbound, c.oid) LIKE %s",
        [f"FOR VALUES FROM ('{ahead:%Y-%m-%d} %"],
    )
    dropped = [name for (name,) in cursor.fetchall()]
    for name in dropped:
        cursor.execute(f'DROP TABLE "{name}"')
for _ in range(8):
    write(now)
first = prepared()
write(ahead)
write(now)
write(now)
print(json.dumps({"first": first, "last": prepared(), "dropped": len(dropped)}))
"""


def _run_prepared_writer(enabled: str) -> dict:
    result = python_run(
        PREPARED_WRITER,
        timeout=120,
        DATABASE_URL=worker_database_url(),
        DB_PREPARED_STATEMENTS=enabled,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("enabled", ["true", "false"])
def test_the_points_write_is_prepared_once_per_connection_unless_turned_off(enabled):
    truncate_point_tables()
    try:
        report = _run_prepared_writer(enabled)
        assert report["dropped"] == 2  # and created again by the write six days ahead
        if enabled == "true":
            # Prepared at its sixth use, then run from the prepared statement: 3 of the first 8
            # writes, all 3 after the new day's partition (PostgreSQL re-plans it for that).
            assert report["first"] == [1, 3]
            assert report["last"] == [1, 6]
        else:
            assert report["first"] == report["last"] == [0, 0]
        assert MetricPoint.objects.count() == 11
        assert sorted(RollupDay.objects.values_list("count", flat=True)) == [1, 10]
        assert sum(RollupMinute.objects.values_list("sum", flat=True)) == 11.0
    finally:
        partitions.partitions_ensure(now=datetime.now(UTC))
        truncate_point_tables()
