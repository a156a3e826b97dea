"""Property: the query API agrees with a small pure-Python reference over the same raw points.

The reference lays out buckets by walking the range minute by minute and starting a new bucket
whenever the local minute/hour (with its UTC offset) or the local date changes, then aggregates
the raw points it wrote. It shares no code with metrics.selectors.
"""

import itertools
import math
import uuid
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metrics.services import PointInput, points_ingest

pytestmark = pytest.mark.django_db

ZONES = [
    "UTC",
    "Europe/Berlin",
    "Asia/Kolkata",
    "Asia/Kathmandu",
    "Australia/Adelaide",
    "Pacific/Chatham",
    "America/New_York",
    "Australia/Lord_Howe",
]
AGGREGATIONS = ["sum", "avg", "min", "max", "count", "rate", "p50", "p90", "p95", "p99"]
MINUTE = timedelta(minutes=1)


# --- the reference --------------------------------------------------------------------------


def bucket_key(instant, interval, tz):
    local = instant.astimezone(tz)
    if interval == "day":
        return local.date()
    wall = local.replace(second=0, microsecond=0, tzinfo=None)
    if interval == "hour":
        wall = wall.replace(minute=0)
    return wall, local.utcoffset()


def reference_buckets(start, end, interval, tz):
    """[(bucket start, bucket end)] from the one holding `start` to the last starting before `end`."""
    # Every offset change of these zones falls on a whole UTC minute, so a minute walk is exact.
    t = start.replace(second=0, microsecond=0) - timedelta(days=2)
    stop = end + timedelta(days=2)
    bounds = []
    previous = None
    while t <= stop:
        key = bucket_key(t, interval, tz)
        if key != previous:
            bounds.append(t)
            previous = key
        t += MINUTE
    first = max(i for i, b in enumerate(bounds) if b <= start)
    return [(bounds[i], bounds[i + 1]) for i in range(first, len(bounds) - 1) if bounds[i] < end]


def percentile_cont(values, q):
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def aggregate(values, aggregation, seconds):
    if not values:
        return None
    if aggregation == "sum":
        return sum(values)
    if aggregation == "avg":
        return sum(values) / len(values)
    if aggregation == "min":
        return min(values)
    if aggregation == "max":
        return max(values)
    if aggregation == "count":
        return len(values)
    if aggregation == "rate":
        return sum(values) / seconds
    return percentile_cont(values, int(aggregation[1:]) / 100)


def fill(values, mode):
    if mode == "zero":
        return [0 if v is None else v for v in values]
    if mode == "previous":
        return list(itertools.accumulate(values, lambda prev, v: prev if v is None else v))
    return values


def default_fill(kind, aggregation):
    if aggregation == "count" or (kind == "counter" and aggregation in {"sum", "rate"}):
        return "zero"
    return "null"


def reference(points, buckets, aggregation, fill_mode):
    values = [
        aggregate(
            [v for v, when, _ in points if lo <= when < hi], aggregation, (hi - lo).total_seconds()
        )
        for lo, hi in buckets
    ]
    return fill(values, fill_mode)


def same(got, expected):
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        if e is None or g is None:
            assert g == e
        else:
            assert g == pytest.approx(e, rel=1e-9, abs=1e-9)


# --- the property ---------------------------------------------------------------------------

BASE = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=3)
# Points and ranges gather around the middle of three days, so most ranges hold points, some
# within minutes of each other and some a day apart.
CENTER = BASE + timedelta(days=1, hours=12)

points_strategy = st.lists(
    st.tuples(
        st.integers(-400, 400).map(lambda x: x / 4),  # exact in binary: sums do not depend on order
        st.one_of(st.integers(-3 * 3600, 3 * 3600), st.integers(-86400, 86400)).map(
            lambda s: CENTER + timedelta(seconds=s)
        ),
        st.sampled_from([{}, {"host": "a"}, {"host": "b"}, {"host": "a", "dc": "eu"}]),
    ),
    min_size=1,
    max_size=60,
)
starts_strategy = st.one_of(st.integers(-4 * 3600, 3600), st.integers(-36 * 3600, 12 * 3600)).map(
    lambda s: CENTER + timedelta(seconds=s)
)
lengths_strategy = st.one_of(st.integers(1, 6 * 3600), st.integers(1, 2 * 86400))


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    points=points_strategy,
    kind=st.sampled_from(["counter", "value"]),
    interval=st.sampled_from(["minute", "hour", "day"]),
    zone=st.sampled_from(ZONES),
    fill_mode=st.sampled_from([None, "null", "zero", "previous"]),
    start=starts_strategy,
    length=lengths_strategy,
    selection=st.sampled_from([None, "tag", "group_by"]),
)
def test_every_aggregation_matches_the_reference(
    make_api_client, points, kind, interval, zone, fill_mode, start, length, selection
):
    client = make_api_client(scopes=["read"])
    name = f"prop.{uuid.uuid4().hex}"
    points_ingest(points=[PointInput(kind, name, v, when, tags) for v, when, tags in points])
    tz = ZoneInfo(zone)
    end = start + timedelta(seconds=length)
    buckets = reference_buckets(start, end, interval, tz)
    assert len(buckets) <= 10_080
    params = {"from": start.isoformat(), "to": end.isoformat(), "interval": interval, "tz": zone}
    if fill_mode:
        params["fill"] = fill_mode
    if selection == "tag":
        params["tag"] = "host:a"
        points = [p for p in points if p[2].get("host") == "a"]
    elif selection == "group_by":
        params["group_by"] = "host"
    expected_starts = [lo.astimezone(tz).isoformat() for lo, _ in buckets]

    for aggregation in AGGREGATIONS:
        response = client.get(f"/api/metrics/{name}", {**params, "aggregation": aggregation})
        if aggregation == "rate" and kind == "value":
            assert response.status_code == 400
            continue
        assert response.status_code == 200, response.content
        body = response.json()
        mode = fill_mode or default_fill(kind, aggregation)
        assert body["fill"] == mode
        if selection != "group_by":
            assert [b["start"] for b in body["buckets"]] == expected_starts
            same(
                [b["value"] for b in body["buckets"]], reference(points, buckets, aggregation, mode)
            )
            continue
        # Groups: one per host value (None for points without one) having points in the buckets.
        lo, hi = buckets[0][0], buckets[-1][1]
        hosts = {p[2].get("host") for p in points if lo <= p[1] < hi}
        expected_groups = sorted(hosts, key=lambda h: (h is None, h or ""))
        assert [g["tags"] for g in body["groups"]] == [{"host": h} for h in expected_groups]
        for group, host in zip(body["groups"], expected_groups, strict=True):
            assert [b["start"] for b in group["buckets"]] == expected_starts
            mine = [p for p in points if p[2].get("host") == host]
            same(
                [b["value"] for b in group["buckets"]], reference(mine, buckets, aggregation, mode)
            )


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    zone=st.sampled_from(
        ["Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "America/Santiago"]
    ),
    interval=st.sampled_from(["hour", "day"]),
    start=st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2027, 12, 1)),
    hours=st.integers(1, 24 * 20),
)
def test_bucket_starts_match_a_minute_walk_across_dst_changes(
    make_api_client, zone, interval, start, hours
):
    """Past and future ranges with no points: the layout alone, around every kind of DST change."""
    client = make_api_client(scopes=["read"])
    points_ingest(points=[PointInput("value", "layout", 1.0, datetime.now(UTC))])
    tz = ZoneInfo(zone)
    start = start.replace(tzinfo=UTC)
    if interval == "hour":
        hours = min(hours, 24 * 4)
    end = start + timedelta(hours=hours)
    response = client.get(
        "/api/metrics/layout",
        {"from": start.isoformat(), "to": end.isoformat(), "interval": interval, "tz": zone},
    )
    assert response.status_code == 200, response.content
    expected = [
        lo.astimezone(tz).isoformat() for lo, _ in reference_buckets(start, end, interval, tz)
    ]
    assert [b["start"] for b in response.json()["buckets"]] == expected
