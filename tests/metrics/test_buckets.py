"""The bucket layout alone: pure Python, no database."""

import itertools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metrics.buckets import MAX_BUCKETS, TooManyBuckets, bucket_bounds, bucket_starts

BERLIN = ZoneInfo("Europe/Berlin")
KOLKATA = ZoneInfo("Asia/Kolkata")
UTC_ZONE = ZoneInfo("UTC")


def _local_days(day: datetime, tz: ZoneInfo) -> list[int]:
    bounds = bucket_bounds(start=day, end=day + timedelta(hours=1), interval="day", tz=tz)
    return [b - a for a, b in itertools.pairwise(bounds)]


def test_berlin_days_last_23_and_25_hours_across_dst():
    spring = datetime(2026, 3, 29, 12, tzinfo=BERLIN)
    autumn = datetime(2026, 10, 25, 12, tzinfo=BERLIN)
    assert _local_days(spring, BERLIN) == [23 * 3600]
    assert _local_days(autumn, BERLIN) == [25 * 3600]


def test_the_repeated_autumn_hour_is_two_buckets():
    start = datetime(2026, 10, 25, 0, tzinfo=UTC)  # 02:00 CEST
    bounds = bucket_bounds(start=start, end=start + timedelta(hours=2), interval="hour", tz=BERLIN)
    starts = bucket_starts(bounds, BERLIN)
    assert starts == ["2026-10-25T02:00:00+02:00", "2026-10-25T02:00:00+01:00"]


def test_kolkata_hours_start_at_half_past_utc():
    start = datetime(2026, 6, 1, 0, 0, tzinfo=UTC)
    bounds = bucket_bounds(start=start, end=start + timedelta(hours=3), interval="hour", tz=KOLKATA)
    assert all(b % 3600 == 1800 for b in bounds)
    assert bucket_starts(bounds, KOLKATA)[0] == "2026-06-01T05:00:00+05:30"


def test_the_bucket_holding_start_comes_first_and_the_last_starts_before_end():
    start = datetime(2026, 6, 1, 10, 30, tzinfo=UTC)
    end = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
    bounds = bucket_bounds(start=start, end=end, interval="hour", tz=UTC_ZONE)
    assert bucket_starts(bounds, UTC_ZONE) == [
        "2026-06-01T10:00:00+00:00",
        "2026-06-01T11:00:00+00:00",
    ]


@pytest.mark.parametrize(("minutes", "allowed"), [(MAX_BUCKETS, True), (MAX_BUCKETS + 1, False)])
def test_at_most_max_buckets(minutes, allowed):
    start = datetime(2026, 6, 1, tzinfo=UTC)
    end = start + timedelta(minutes=minutes)
    if allowed:
        assert (
            len(bucket_bounds(start=start, end=end, interval="minute", tz=UTC_ZONE)) == minutes + 1
        )
    else:
        with pytest.raises(TooManyBuckets):
            bucket_bounds(start=start, end=end, interval="minute", tz=UTC_ZONE)


@settings(max_examples=60, deadline=None)
@given(
    start=st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2035, 1, 1)),
    hours=st.integers(min_value=1, max_value=24 * 40),
    zone=st.sampled_from(
        ["Europe/Berlin", "Asia/Kathmandu", "Australia/Adelaide", "America/St_Johns"]
    ),
    interval=st.sampled_from(["hour", "day"]),
)
def test_starts_are_what_datetime_isoformat_says(start, hours, zone, interval):
    tz = ZoneInfo(zone)
    start = start.replace(tzinfo=UTC)
    bounds = bucket_bounds(
        start=start, end=start + timedelta(hours=hours), interval=interval, tz=tz
    )
    expected = [datetime.fromtimestamp(b, tz).isoformat() for b in bounds[:-1]]
    assert bucket_starts(bounds, tz) == expected
    assert bounds == sorted(set(bounds))
