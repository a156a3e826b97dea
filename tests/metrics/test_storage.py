from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection

from metrics.models import Metric, MetricPoint, RollupDay, RollupHour, RollupMinute, Series
from metrics.services import MetricTypeConflict, PointInput, points_ingest

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
