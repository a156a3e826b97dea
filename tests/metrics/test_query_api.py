"""GET /api/metrics/{name}: buckets, aggregations, fill, tags, group_by, zones and every error."""

import json
import logging
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import psycopg
import pytest
from django.db import connection
from django.test import override_settings

from metrics.models import RollupHour
from retention.services import retention_apply
from tests.factories import MetricFactory, SeriesFactory
from tests.helpers import assert_problem, ingest

pytestmark = pytest.mark.django_db

BERLIN = ZoneInfo("Europe/Berlin")
KOLKATA = ZoneInfo("Asia/Kolkata")


@pytest.fixture
def reader(make_api_client):
    return make_api_client(scopes=["read"])


@pytest.fixture
def base():
    """Midnight UTC two days ago: inside the ±7-day write window, with whole days around it."""
    return datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=2)


def query(client, name, **params):
    if "from_" in params:
        params["from"] = params.pop("from_")
    params = {k: v.isoformat() if isinstance(v, datetime) else v for k, v in params.items()}
    return client.get(f"/api/metrics/{name}", params)


def ok(response):
    assert response.status_code == 200, response.content
    return response.json()


def values(response):
    return [bucket["value"] for bucket in ok(response)["buckets"]]


def starts(response):
    return [bucket["start"] for bucket in ok(response)["buckets"]]


# --- shape, defaults, auth ------------------------------------------------------------------


def test_counter_hours_list_every_bucket_with_sums_and_zero_for_empty(reader, base):
    h = timedelta(hours=1)
    ingest("counter", "hits", (2, base + 1.2 * h), (3, base + 1.8 * h), (5, base + 3 * h))
    response = query(reader, "hits", from_=base, to=base + 5 * h)
    body = ok(response)
    assert body == {
        "metric": "hits",
        "type": "counter",
        "interval": "hour",
        "aggregation": "sum",
        "tz": "UTC",
        "fill": "zero",
        "from": base.isoformat(),
        "to": (base + 5 * h).isoformat(),
        "buckets": [
            {"start": (base + i * h).isoformat(), "value": v}
            for i, v in enumerate([0.0, 5.0, 0.0, 5.0, 0.0])
        ],
    }
    assert response["X-RateLimit-Limit"]


def test_value_metric_defaults_to_avg_with_null_for_empty(reader, base):
    h = timedelta(hours=1)
    ingest("value", "cpu", (1, base), (3, base + 0.5 * h))
    body = ok(query(reader, "cpu", from_=base, to=base + 2 * h))
    assert (body["aggregation"], body["fill"]) == ("avg", "null")
    assert [b["value"] for b in body["buckets"]] == [2.0, None]


def test_without_from_and_to_the_last_24_hours_up_to_now_are_returned(reader):
    now = datetime.now(UTC)
    ingest("counter", "recent", (4, now - timedelta(minutes=1)))
    body = ok(query(reader, "recent"))
    buckets = body["buckets"]
    # The hour holding now-24h through the hour holding now: 25 buckets, or 24 on the hour.
    assert len(buckets) in {24, 25}
    assert datetime.fromisoformat(buckets[-1]["start"]) <= now
    assert datetime.fromisoformat(buckets[-1]["start"]) + timedelta(hours=1) > now
    assert sum(b["value"] for b in buckets) == 4.0


def test_points_before_from_in_the_first_bucket_are_counted_with_it(reader, base):
    ingest("counter", "whole", (1, base + timedelta(minutes=5)), (1, base + timedelta(minutes=50)))
    response = query(
        reader, "whole", from_=base + timedelta(minutes=30), to=base + timedelta(hours=1)
    )
    assert starts(response) == [base.isoformat()]
    assert values(response) == [2.0]


def test_unix_seconds_and_offsets_select_the_same_buckets(reader, base):
    ingest("counter", "unix", (1, base + timedelta(minutes=90)))
    iso = query(reader, "unix", from_=base, to=base + timedelta(hours=3))
    unix = query(reader, "unix", from_=str(base.timestamp()), to=str(base.timestamp() + 10800.5))
    berlin = query(
        reader,
        "unix",
        from_=base.astimezone(BERLIN),
        to=(base + timedelta(hours=3)).astimezone(BERLIN),
    )
    assert values(iso) == values(berlin) == [0.0, 1.0, 0.0]
    assert values(unix) == [0.0, 1.0, 0.0, 0.0]  # the half second after 3 h opens a fourth hour


def test_an_unencoded_plus_in_the_offset_is_understood(reader, base):
    ingest("counter", "plus", (1, base))
    path = f"/api/metrics/plus?from={base.isoformat()}&to={(base + timedelta(hours=1)).isoformat()}"
    assert "+00:00" in path  # decoded by the server as a space
    assert values(reader.get(path)) == [1.0]


def test_metric_names_with_slashes_are_queried(reader, base):
    ingest("counter", "web/api/hits", (1, base))
    assert values(query(reader, "web/api/hits", from_=base, to=base + timedelta(hours=1))) == [1.0]


def test_a_key_without_read_scope_gets_403_and_no_key_401(make_api_client, client_anon, base):
    ingest("counter", "secret", (1, base))
    writer = make_api_client(scopes=["write"])
    assert_problem(query(writer, "secret", from_=base, to=base + timedelta(hours=1)), 403)
    assert_problem(query(client_anon, "secret", from_=base, to=base + timedelta(hours=1)), 401)


# --- aggregations ---------------------------------------------------------------------------


@pytest.fixture
def latencies(base):
    """Two series in one hour: a = 1, 2, 3 and b = 4, 10 (so avg 4, not the 4.5 of averages)."""
    t = base + timedelta(hours=1)
    ingest(
        "value",
        "latency",
        (1, t, {"host": "a"}),
        (2, t + timedelta(minutes=10), {"host": "a"}),
        (3, t + timedelta(minutes=20), {"host": "a"}),
        (4, t + timedelta(minutes=30), {"host": "b"}),
        (10, t + timedelta(minutes=59), {"host": "b"}),
    )
    return t


@pytest.mark.parametrize(
    ("aggregation", "expected"),
    [
        ("sum", 20.0),
        ("avg", 4.0),
        ("min", 1.0),
        ("max", 10.0),
        ("count", 5),
        ("p50", 3.0),
        ("p90", 7.6),
        ("p95", 8.8),
        ("p99", 9.76),
    ],
)
def test_each_aggregation_of_a_value_metric(reader, latencies, aggregation, expected):
    response = query(
        reader,
        "latency",
        from_=latencies - timedelta(hours=1),
        to=latencies + timedelta(hours=2),
        aggregation=aggregation,
    )
    got = values(response)
    assert got[1] == pytest.approx(expected)
    empty = 0 if aggregation == "count" else None
    assert (got[0], got[2]) == (empty, empty)
    assert type(got[1]) is type(expected)


def test_rate_is_the_sum_per_second_of_the_bucket(reader, base):
    ingest("counter", "req", (3600, base + timedelta(minutes=5)), (3600, base + timedelta(hours=1)))
    hourly = query(reader, "req", from_=base, to=base + timedelta(hours=3), aggregation="rate")
    assert values(hourly) == [1.0, 1.0, 0.0]
    daily = query(
        reader, "req", from_=base, to=base + timedelta(days=1), aggregation="rate", interval="day"
    )
    assert values(daily) == [pytest.approx(7200 / 86400)]


def test_rate_of_a_value_metric_is_400(reader, latencies):
    body = assert_problem(query(reader, "latency", aggregation="rate"), 400, field="aggregation")
    assert "counter" in body["detail"]


def test_thousand_increments_at_one_timestamp_read_back_as_exactly_1000(api_client, base):
    when = (base + timedelta(hours=5, minutes=7, seconds=3)).isoformat()
    batch = {"points": [{"type": "counter", "name": "clicks", "timestamp": when}] * 1000}
    response = api_client.post(
        "/api/metrics/batch", json.dumps(batch), content_type="application/json"
    )
    assert response.status_code == 201, response.content
    for interval in ("minute", "hour", "day"):
        for aggregation, expected in (("sum", 1000), ("count", 1000)):
            got = values(
                query(
                    api_client,
                    "clicks",
                    from_=base + timedelta(hours=5, minutes=7),
                    to=base + timedelta(hours=5, minutes=8),
                    interval=interval,
                    aggregation=aggregation,
                )
            )
            assert got == [expected], (interval, aggregation)


# --- intervals ------------------------------------------------------------------------------


def test_minute_buckets_hold_the_points_of_their_minute(reader, base):
    t = base + timedelta(hours=10)
    ingest(
        "value",
        "temp",
        (1, t + timedelta(seconds=5)),
        (3, t + timedelta(seconds=59)),
        (7, t + timedelta(minutes=2)),
    )
    response = query(
        reader,
        "temp",
        from_=t + timedelta(seconds=30),
        to=t + timedelta(minutes=3),
        interval="minute",
    )
    assert starts(response) == [(t + timedelta(minutes=m)).isoformat() for m in range(3)]
    assert values(response) == [2.0, None, 7.0]


def test_day_buckets_in_utc_start_at_midnight(reader, base):
    ingest("value", "mem", (5, base + timedelta(hours=23)), (1, base + timedelta(days=1, hours=1)))
    response = query(
        reader,
        "mem",
        from_=base + timedelta(hours=12),
        to=base + timedelta(days=2),
        interval="day",
        aggregation="max",
    )
    assert starts(response) == [base.isoformat(), (base + timedelta(days=1)).isoformat()]
    assert values(response) == [5.0, 1.0]


# --- fill -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fill", "expected"),
    [
        ("null", [None, 1.0, None, None, 4.0, None]),
        ("zero", [0.0, 1.0, 0.0, 0.0, 4.0, 0.0]),
        ("previous", [None, 1.0, 1.0, 1.0, 4.0, 4.0]),
    ],
)
def test_fill_modes_for_empty_buckets(reader, base, fill, expected):
    h = timedelta(hours=1)
    ingest("value", "gauge", (1, base + h), (4, base + 4 * h))
    assert values(query(reader, "gauge", from_=base, to=base + 6 * h, fill=fill)) == expected


def test_counter_count_defaults_to_zero_fill_and_max_to_null(reader, base):
    h = timedelta(hours=1)
    ingest("counter", "ticks", (2, base + h))
    count = ok(query(reader, "ticks", from_=base, to=base + 2 * h, aggregation="count"))
    maximum = ok(query(reader, "ticks", from_=base, to=base + 2 * h, aggregation="max"))
    assert (count["fill"], [b["value"] for b in count["buckets"]]) == ("zero", [0, 1])
    assert (maximum["fill"], [b["value"] for b in maximum["buckets"]]) == ("null", [None, 2.0])


# --- tags and group_by ----------------------------------------------------------------------


@pytest.fixture
def requests_by_host(base):
    t = base + timedelta(hours=2)
    ingest(
        "counter",
        "requests",
        (1, t, {"host": "a", "dc": "eu"}),
        (10, t, {"host": "b", "dc": "eu"}),
        (100, t, {"host": "c", "dc": "us"}),
        (1000, t, {"dc": "us"}),
        (5, t, {"host": "a", "dc": "eu", "path": "/x:y"}),
    )
    return t


def test_one_tag_filters_the_series(reader, requests_by_host):
    t = requests_by_host
    assert values(query(reader, "requests", from_=t, to=t + timedelta(hours=1), tag="dc:eu")) == [
        16.0
    ]


def test_every_tag_must_match(reader, requests_by_host):
    t = requests_by_host
    response = query(
        reader, "requests", from_=t, to=t + timedelta(hours=1), tag=["dc:eu", "host:a"]
    )
    assert values(response) == [6.0]
    colon = query(reader, "requests", from_=t, to=t + timedelta(hours=1), tag="path:/x:y")
    assert values(colon) == [5.0]
    contradiction = query(
        reader, "requests", from_=t, to=t + timedelta(hours=1), tag=["host:a", "host:b"]
    )
    assert values(contradiction) == [0.0]


def test_a_tag_no_series_has_gives_empty_buckets(reader, requests_by_host):
    t = requests_by_host
    response = query(
        reader, "requests", from_=t, to=t + timedelta(hours=2), tag="dc:ap", fill="null"
    )
    assert values(response) == [None, None]


def test_group_by_returns_one_series_per_tag_value_and_null_for_series_without_it(
    reader, requests_by_host
):
    t = requests_by_host
    body = ok(query(reader, "requests", from_=t, to=t + timedelta(hours=2), group_by="host"))
    assert "buckets" not in body
    assert body["group_by"] == "host"
    assert [(g["tags"], [b["value"] for b in g["buckets"]]) for g in body["groups"]] == [
        ({"host": "a"}, [6.0, 0.0]),
        ({"host": "b"}, [10.0, 0.0]),
        ({"host": "c"}, [100.0, 0.0]),
        ({"host": None}, [1000.0, 0.0]),
    ]
    assert body["groups"][0]["buckets"][1]["start"] == (t + timedelta(hours=1)).isoformat()


def test_group_by_with_a_tag_filter(reader, requests_by_host):
    t = requests_by_host
    body = ok(
        query(reader, "requests", from_=t, to=t + timedelta(hours=1), group_by="dc", tag="host:a")
    )
    assert [(g["tags"], g["buckets"][0]["value"]) for g in body["groups"]] == [({"dc": "eu"}, 6.0)]


def test_group_by_with_a_percentile(reader, latencies):
    t = latencies
    body = ok(
        query(
            reader,
            "latency",
            from_=t,
            to=t + timedelta(hours=1),
            group_by="host",
            aggregation="p50",
        )
    )
    assert [(g["tags"], g["buckets"][0]["value"]) for g in body["groups"]] == [
        ({"host": "a"}, 2.0),
        ({"host": "b"}, 7.0),
    ]


def test_percentile_with_a_tag_filter_at_minute_resolution(reader, latencies):
    t = latencies
    response = query(
        reader,
        "latency",
        from_=t,
        to=t + timedelta(minutes=60),
        interval="minute",
        aggregation="p99",
        tag="host:b",
    )
    got = values(response)
    assert len(got) == 60
    assert {i: v for i, v in enumerate(got) if v is not None} == {30: 4.0, 59: 10.0}


# --- time zones -----------------------------------------------------------------------------


def _hour_rollups(name, kind, first, last, value=1.0):
    """Hour rollup rows (not partitioned, so any date works) for every UTC hour in [first, last)."""
    series = SeriesFactory(metric=MetricFactory(name=name, type=kind))
    # Stepped in UTC: an hour added to a Berlin wall-clock time can land on the same instant.
    rows, t, last = [], first.astimezone(UTC), last.astimezone(UTC)
    while t < last:
        rows.append(RollupHour(series=series, bucket=t, count=1, sum=value, min=value, max=value))
        t += timedelta(hours=1)
    RollupHour.objects.bulk_create(rows)


@pytest.mark.parametrize(
    ("day", "hours"),
    [(datetime(2026, 3, 29, tzinfo=BERLIN), 23), (datetime(2026, 10, 25, tzinfo=BERLIN), 25)],
)
def test_berlin_dst_days_last_23_and_25_hours(reader, day, hours):
    _hour_rollups("dst", "counter", day - timedelta(days=2), day + timedelta(days=3), value=3600.0)
    response = query(
        reader,
        "dst",
        from_=day - timedelta(days=1),
        to=(day + timedelta(days=2)).astimezone(UTC),
        interval="day",
        tz="Europe/Berlin",
    )
    before = (day - timedelta(days=1)).isoformat()
    assert starts(response) == [
        before,
        day.isoformat(),
        datetime(day.year, day.month, day.day + 1, tzinfo=BERLIN).isoformat(),
    ]
    assert values(response) == [24 * 3600.0, hours * 3600.0, 24 * 3600.0]
    # The short day or the long one alone: rate is 3600 per hour over a day of `hours` hours,
    # count one rollup row per hour.
    the_day = {
        "from_": day,
        "to": day + timedelta(hours=1),
        "interval": "day",
        "tz": "Europe/Berlin",
    }
    for aggregation, expected in (("rate", [1.0]), ("count", [hours])):
        response = query(reader, "dst", aggregation=aggregation, **the_day)
        assert values(response) == expected, aggregation


def test_the_repeated_hour_of_a_fall_back_is_two_buckets(reader):
    first = datetime(2026, 10, 25, 0, 0, tzinfo=UTC)  # 02:00 CEST
    _hour_rollups("fall", "value", first - timedelta(hours=1), first + timedelta(hours=2))
    response = query(
        reader,
        "fall",
        from_="2026-10-25T01:30:00+02:00",
        to="2026-10-25T03:00:00+01:00",
        tz="Europe/Berlin",
    )
    assert starts(response) == [
        "2026-10-25T01:00:00+02:00",
        "2026-10-25T02:00:00+02:00",
        "2026-10-25T02:00:00+01:00",
    ]
    assert values(response) == [1.0, 1.0, 1.0]


def test_kolkata_hours_start_at_local_whole_hours(reader, base):
    t = base + timedelta(hours=10)  # 15:30 IST
    ingest(
        "counter",
        "ist",
        (1, t + timedelta(minutes=10)),
        (2, t + timedelta(minutes=40)),
        (4, t - timedelta(minutes=1)),
    )
    utc = query(reader, "ist", from_=t, to=t + timedelta(hours=1))
    assert values(utc) == [3.0]
    ist = query(reader, "ist", from_=t, to=t + timedelta(hours=1), tz="Asia/Kolkata")
    local = t.astimezone(KOLKATA)
    assert starts(ist) == [
        local.replace(minute=0).isoformat(),
        local.replace(minute=0, hour=16).isoformat(),
    ]
    assert starts(ist)[0].endswith("T15:00:00+05:30")
    assert values(ist) == [5.0, 2.0]


def test_kolkata_days_start_at_local_midnight(reader, base):
    ingest(
        "counter",
        "istday",
        (1, base + timedelta(hours=18, minutes=29)),
        (2, base + timedelta(hours=18, minutes=31)),
    )
    response = query(
        reader, "istday", from_=base, to=base + timedelta(days=1), interval="day", tz="Asia/Kolkata"
    )
    local = base.astimezone(KOLKATA)
    assert starts(response) == [
        local.replace(hour=0, minute=0).isoformat(),
        (local.replace(hour=0, minute=0) + timedelta(days=1)).isoformat(),
    ]
    assert values(response) == [1.0, 2.0]


# --- long history in zones whose offset is not a whole hour ---------------------------------


def _local_sums(rows, tz, interval):
    """{local bucket start: sum} of (recorded_at, value) rows, bucketed by wall clock in `tz`."""
    sums: dict[datetime, float] = {}
    for when, value in rows:
        local = when.astimezone(tz)
        start = local.replace(minute=0, second=0, microsecond=0)
        if interval == "day":
            start = start.replace(hour=0)
        sums[start] = sums.get(start, 0.0) + value
    return sums


@pytest.mark.parametrize("zone", ["Asia/Kolkata", "Asia/Kathmandu"])
def test_hours_and_days_120_days_back_equal_the_raw_points_after_retention(reader, settings, zone):
    """Written by the write path, read after the raw points and minute rollups have expired."""
    settings.RETENTION_DAYS = 30
    settings.ROLLUP_RETENTION_DAYS = 730
    tz = ZoneInfo(zone)
    now = datetime.now(UTC)
    day = (
        (now - timedelta(days=120))
        .astimezone(tz)
        .replace(hour=0, minute=0, second=0, microsecond=0)
    )
    # Every 7 minutes 13 seconds for two local days, and points one second either side of each
    # local hour boundary, where a UTC hour rollup would mix two local hours.
    moments = [day + timedelta(seconds=433 * n) for n in range(2 * 86400 // 433)]
    for hour in range(1, 48):
        boundary = day + timedelta(hours=hour)
        moments += [boundary - timedelta(seconds=1), boundary]
    ingest(
        "counter",
        "history",
        *((float(n % 17 + 1), when.astimezone(UTC)) for n, when in enumerate(moments)),
    )
    with connection.cursor() as cursor:
        cursor.execute("SELECT recorded_at, value FROM metric_points")
        raw = cursor.fetchall()
    assert len(raw) == len(moments)

    counts = retention_apply(now=now)

    assert counts["metric_points"] == len(moments)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT (SELECT count(*) FROM metric_points), count(*) FROM metric_rollup_minute"
        )
        assert cursor.fetchone() == (0, 0)
    for interval in ("hour", "day"):
        response = query(
            reader, "history", from_=day, to=day + timedelta(days=2), interval=interval, tz=zone
        )
        expected = _local_sums(raw, tz, interval)
        got = {datetime.fromisoformat(b["start"]): b["value"] for b in ok(response)["buckets"]}
        assert len(got) == (48 if interval == "hour" else 2)
        assert got == pytest.approx(expected)
        assert sum(got.values()) == pytest.approx(sum(value for _, value in raw))


@override_settings(QUERY_SLOW_MS=0)
@pytest.mark.parametrize(
    ("zone", "interval", "table"),
    [
        ("UTC", "day", "metric_rollup_day"),
        ("Europe/Berlin", "hour", "metric_rollup_hour"),
        ("Asia/Kolkata", "hour", "metric_rollup_15m"),
        ("Asia/Kathmandu", "day", "metric_rollup_15m"),
        ("Pacific/Chatham", "hour", "metric_rollup_15m"),
        ("Australia/Adelaide", "day", "metric_rollup_15m"),
        ("Asia/Kathmandu", "minute", "metric_rollup_minute"),
    ],
)
def test_each_query_reads_the_coarsest_rollup_that_tiles_its_buckets(
    reader, base, caplog, zone, interval, table
):
    ingest("counter", "tiles", (1, base))
    with caplog.at_level(logging.WARNING, logger="metrics.selectors"):
        ok(
            query(
                reader,
                "tiles",
                from_=base,
                to=base + timedelta(hours=2),
                interval=interval,
                tz=zone,
            )
        )
    record = next(r for r in caplog.records if r.name == "metrics.selectors")
    assert record.shape == f"rollup:{table}"


def test_an_offset_with_seconds_still_gives_local_whole_hours(reader, base):
    ingest("counter", "lmt", (1, base))
    # Amsterdam kept local mean time, +00:19:32, until 1937.
    response = query(
        reader,
        "lmt",
        from_="1925-01-01T00:00:00+00:19:32",
        to="1925-01-01T02:00:00+00:19:32",
        tz="Europe/Amsterdam",
    )
    assert starts(response) == ["1925-01-01T00:00:00+00:19:32", "1925-01-01T01:00:00+00:19:32"]
    assert values(response) == [0.0, 0.0]


# --- errors ---------------------------------------------------------------------------------


def test_unknown_metric_is_404_problem(reader):
    body = assert_problem(query(reader, "nope"), 404)
    assert "nope" in body["detail"]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"from": "yesterday"}, "from"),
        ({"to": "2026-13-01T00:00:00Z"}, "to"),
        ({"from": "2026-11-01T00:00:00"}, "from"),
        ({"from": "99999999999999"}, "from"),
        ({"from": "-3000000000"}, "from"),
        ({"from": "0001-01-01T00:00:00+05:00"}, "from"),
        ({"to": "9999-12-31T23:59:59-05:00"}, "to"),
        ({"from": "2026-11-02T00:00:00Z", "to": "2026-11-02T00:00:00Z"}, "from"),
        ({"from": "2026-11-03T00:00:00Z", "to": "2026-11-02T00:00:00Z"}, "from"),
        ({"interval": "week"}, "interval"),
        ({"aggregation": "median"}, "aggregation"),
        ({"tz": "Mars/Olympus"}, "tz"),
        ({"tz": "../../etc/passwd"}, "tz"),
        ({"tz": ""}, "tz"),
        ({"fill": "linear"}, "fill"),
        ({"tag": "host"}, "tag.0"),
        ({"tag": ":a"}, "tag.0"),
        ({"tag": "host:"}, "tag.0"),
        ({"group_by": "bad key"}, "group_by"),
        ({"interval": "hour", "interval2": "x"}, "interval2"),
        ({"format": "json"}, "format"),
    ],
)
def test_bad_parameters_are_400_naming_them(reader, base, params, field):
    ingest("value", "cpu", (1, base))
    assert_problem(reader.get("/api/metrics/cpu", params), 400, field=field)


def test_a_parameter_given_twice_is_400(reader, base):
    ingest("value", "cpu", (1, base))
    assert_problem(reader.get("/api/metrics/cpu?interval=hour&interval=day"), 400, field="interval")


def test_unknown_parameters_are_all_named(reader, base):
    ingest("value", "cpu", (1, base))
    body = assert_problem(reader.get("/api/metrics/cpu?bucket=1&agg=sum"), 400)
    assert {e["field"] for e in body["errors"]} == {"agg", "bucket"}


def test_10080_buckets_are_served_and_10081_refused_with_a_coarser_interval(reader, base):
    ingest("counter", "many", (1, base))
    first = base - timedelta(days=3)
    served = query(
        reader, "many", from_=first, to=first + timedelta(minutes=10080), interval="minute"
    )
    got = values(served)
    assert len(got) == 10080
    assert sum(got) == 1.0
    refused = assert_problem(
        query(reader, "many", from_=first, to=first + timedelta(minutes=10081), interval="minute"),
        400,
        field="interval",
    )
    assert "10,081" in refused["detail"]
    assert "interval=hour" in refused["detail"]
    days = query(
        reader, "many", from_="1990-01-01T00:00:00Z", to="2030-01-01T00:00:00Z", interval="day"
    )
    assert "shorter range" in assert_problem(days, 400, field="interval")["detail"]


# --- limits and logging ---------------------------------------------------------------------


@override_settings(QUERY_PERCENTILE_TIMEOUT_MS=50)
def test_a_percentile_query_past_its_timeout_is_503_with_retry_after(reader, base):
    MetricFactory(name="slow", type="value")
    settings = connection.settings_dict
    # Another session holds the points table, so the query waits until its timeout cancels it.
    with psycopg.connect(
        dbname=settings["NAME"],
        user=settings["USER"],
        host=settings["HOST"],
        port=settings["PORT"] or 5432,
        password=settings["PASSWORD"] or None,
    ) as other:
        other.execute("SET lock_timeout = '5s'")  # never hang the suite if the lock is busy
        other.execute("LOCK TABLE metric_points IN ACCESS EXCLUSIVE MODE")
        response = query(
            reader, "slow", from_=base, to=base + timedelta(hours=1), aggregation="p95"
        )
        other.rollback()
    body = assert_problem(response, 503)
    assert int(response["Retry-After"]) > 0
    assert body["type"].endswith("query-timeout")
    # The connection's own limit is back afterwards.
    with connection.cursor() as cursor:
        cursor.execute("SHOW statement_timeout")
        assert cursor.fetchone()[0] != "50ms"
    assert values(
        query(reader, "slow", from_=base, to=base + timedelta(hours=1), aggregation="p95")
    ) == [None]


@override_settings(QUERY_SLOW_MS=0)
def test_queries_slower_than_the_threshold_are_logged_with_their_duration(reader, base, caplog):
    ingest("counter", "logged", (1, base))
    with caplog.at_level(logging.WARNING, logger="metrics.selectors"):
        ok(query(reader, "logged", from_=base, to=base + timedelta(hours=1), tz="Europe/Berlin"))
    record = next(r for r in caplog.records if r.name == "metrics.selectors")
    assert record.getMessage() == "slow query"
    assert record.duration_ms >= 0
    assert (record.metric, record.shape, record.tz) == (
        "logged",
        "rollup:metric_rollup_hour",
        "Europe/Berlin",
    )


def test_fast_queries_are_not_logged(reader, base, caplog):
    ingest("counter", "quiet", (1, base))
    with caplog.at_level(logging.WARNING, logger="metrics.selectors"):
        ok(query(reader, "quiet", from_=base, to=base + timedelta(hours=1)))
    assert not [r for r in caplog.records if r.name == "metrics.selectors"]
