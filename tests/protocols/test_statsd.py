"""StatsD/DogStatsD lines, names, tags and one flush interval's aggregation, in process."""

import logging
import os
import random
from datetime import UTC, datetime

import pytest

from metrics.models import Metric, MetricPoint, Series
from metrics.points import NAME_RE
from metrics.services import PointInput, points_ingest
from protocols import statsd as statsd_protocol
from protocols.statsd import (
    GAUGE_MEMORY,
    LOG_PER_MINUTE,
    Aggregator,
    InvalidLine,
    InvalidLog,
    Sample,
    clean_name,
    parse_line,
)
from protocols.statsd_flush import FlushWriter

NOW = datetime(2026, 11, 30, 12, 0, 10, tzinfo=UTC)


def aggregate(*packets: bytes, max_series: int = 100, max_samples: int = 1000) -> Aggregator:
    agg = Aggregator(max_series=max_series, max_samples=max_samples)
    for packet in packets:
        agg.add_packet(packet)
    return agg


def points_of(agg: Aggregator) -> list[tuple[str, str, float, dict]]:
    return sorted((p.type, p.name, p.value, dict(p.tags)) for p in agg.flush(now=NOW).points)


# --- lines ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "sample"),
    [
        ("hits:1|c", Sample("c", "hits", 1.0)),
        ("hits:-3.5|c", Sample("c", "hits", -3.5)),
        ("hits:1|c|@0.1", Sample("c", "hits", 10.0)),
        ("hits:2|c|@0.25|#env:prod", Sample("c", "hits", 8.0, (("env", "prod"),))),
        ("temp:21.5|g", Sample("g", "temp", 21.5)),
        ("temp:+2|g", Sample("g", "temp", 2.0, delta=True)),
        ("temp:-2|g", Sample("g", "temp", -2.0, delta=True)),
        ("temp:-2|g|@0.5", Sample("g", "temp", -2.0, delta=True)),  # rate scales counters only
        ("db.query:12.25|ms", Sample("ms", "db.query", 12.25)),
        ("db.query:12|ms|@0.5", Sample("ms", "db.query", 12.0)),
        ("size:1e3|h", Sample("h", "size", 1000.0)),
        ("lat:.5|d", Sample("d", "lat", 0.5)),
        ("users:bob|s", Sample("s", "users", 0.0, member="bob")),
        ("users:a:b|s", Sample("s", "users", 0.0, member="a:b")),
        (
            "req:1|c|#region:eu,canary,version:1.2:3",
            Sample("c", "req", 1.0, (("canary", "true"), ("region", "eu"), ("version", "1.2:3"))),
        ),
        # DogStatsD fields about the sender are ignored; empty tag items too.
        (
            "req:1|c|#a:1,,b:2|c:abc123|T1700000000|card:low",
            Sample("c", "req", 1.0, (("a", "1"), ("b", "2"))),
        ),
        ("req:1|c|#a:1|#b:2", Sample("c", "req", 1.0, (("a", "1"), ("b", "2")))),
        ("req:1|c|#a:1,a:1", Sample("c", "req", 1.0, (("a", "1"),))),
    ],
)
def test_a_line_is_parsed(line, sample):
    assert parse_line(line) == sample


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("hits", "no ':'"),
        ("hits:1", "no '|type'"),
        ("hits:1|x", "unknown type"),
        ("hits:1|C", "unknown type"),
        ("hits:|c", "not a number"),
        ("hits:abc|c", "not a number"),
        ("hits:nan|g", "not a number"),
        ("hits:inf|g", "not a number"),
        ("hits:1_000|c", "not a number"),
        ("hits: 1|c", "not a number"),
        ("hits:1e16|c", "outside ±1e15"),
        ("hits:1e999|ms", "outside ±1e15"),
        ("hits:1|c|@0", "must lie in (0, 1]"),
        ("hits:1|c|@1.5", "must lie in (0, 1]"),
        ("hits:1|c|@-0.5", "must lie in (0, 1]"),
        ("hits:1|c|@x", "sample rate"),
        ("users:|s", "may not be empty"),
        (":1|c", "empty once cleaned"),
        ("!!!:1|c", "empty once cleaned"),
        ("a" * 192 + ":1|c", "longer than 191"),
        ("hits:1|c|#9lives:x", "tag key"),
        ("hits:1|c|#env:", "value of tag 'env'"),
        ("hits:1|c|#env:" + "v" * 192, "value of tag 'env'"),
        ("hits:1|c|#env:a\x01b", "value of tag 'env'"),
        ("hits:1|c|#a:1,a:2", "given twice"),
        ("hits:1|c|#" + ",".join(f"t{i}:v" for i in range(11)), "at most 10 tags"),
        ("_e{5,4}:title|text", "events and service checks"),
        ("_sc|my.check|0", "events and service checks"),
    ],
)
def test_an_invalid_line_is_refused_with_its_reason(line, reason):
    with pytest.raises(InvalidLine, match=reason.replace("(", r"\(").replace(")", r"\)")):
        parse_line(line)


def test_a_shape_seen_before_parses_the_same_and_its_errors_are_raised_again():
    for _ in range(3):
        assert parse_line("t:1|ms|#a:1") == Sample("ms", "t", 1.0, (("a", "1"),))
        assert parse_line("t:2|ms|#a:1") == Sample("ms", "t", 2.0, (("a", "1"),))
        with pytest.raises(InvalidLine, match="given twice") as caught:
            parse_line("t:1|c|#a:1,a:2")
        assert caught.value.name == "t"
        with pytest.raises(InvalidLine, match="not a number"):
            parse_line("t:x|ms|#a:1")


def test_the_shape_cache_is_bounded():
    for i in range(statsd_protocol.SHAPE_CACHE + 10):
        parse_line(f"s{i}:1|c")
    assert len(statsd_protocol._shapes) <= statsd_protocol.SHAPE_CACHE
    assert parse_line("s0:1|c") == Sample("c", "s0", 1.0)


def test_ten_tags_are_accepted_and_a_191_character_name_too():
    tags = ",".join(f"t{i}:v" for i in range(10))
    assert len(parse_line(f"{'a' * 191}:1|c|#{tags}").tags) == 10


# --- names ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("api.requests", "api.requests"),
        ("my metric", "my_metric"),
        ("my \t  metric", "my_metric"),
        ("a/b/c", "a-b-c"),
        ("héllo.wörld!", "hllo.wrld"),
        ("a;b=c,d", "abcd"),
        ("a-b_c.D9", "a-b_c.D9"),
    ],
)
def test_names_are_cleaned_as_etsy_statsd_does(raw, clean):
    assert clean_name(raw) == clean
    assert NAME_RE.fullmatch(clean_name(raw))


def test_a_cleaned_name_is_stored_under_its_clean_form():
    assert points_of(aggregate(b"page views/home:1|c")) == [("counter", "page_views-home", 1.0, {})]


# --- aggregation ------------------------------------------------------------------------------


def test_counters_are_summed_per_name_and_tag_set_and_divided_by_their_rate():
    agg = aggregate(
        b"hits:1|c\nhits:2|c\nhits:1|c|@0.5",
        b"hits:5|c|#env:prod\nhits:1|c|#env:prod|@0.1",
        b"hits:-1|c|#env:dev",
    )
    assert points_of(agg) == [
        ("counter", "hits", -1.0, {"env": "dev"}),
        ("counter", "hits", 5.0, {}),
        ("counter", "hits", 15.0, {"env": "prod"}),
    ]


def test_tag_order_does_not_make_another_series():
    agg = aggregate(b"hits:1|c|#a:1,b:2\nhits:1|c|#b:2,a:1")
    assert points_of(agg) == [("counter", "hits", 2.0, {"a": "1", "b": "2"})]


def test_a_gauge_keeps_its_last_value_and_deltas_adjust_it_across_flushes():
    agg = aggregate(b"temp:10|g\ntemp:20|g\ntemp:+5|g\ntemp:-2|g")
    assert points_of(agg) == [("value", "temp", 23.0, {})]
    agg.add_packet(b"temp:+1|g\ntemp:+1|g")
    assert points_of(agg) == [("value", "temp", 25.0, {})]
    # A gauge not sent in an interval writes no point, but its value is remembered.
    assert points_of(agg) == []
    agg.add_packet(b"temp:-30|g")
    assert points_of(agg) == [("value", "temp", -5.0, {})]


def test_a_delta_without_a_known_value_starts_from_zero_and_tags_keep_gauges_apart():
    agg = aggregate(b"q:+3|g|#shard:1\nq:7|g|#shard:2\nq:-1|g|#shard:2")
    assert points_of(agg) == [
        ("value", "q", 3.0, {"shard": "1"}),
        ("value", "q", 6.0, {"shard": "2"}),
    ]


def test_a_negative_gauge_is_set_by_zeroing_first_as_statsd_clients_do():
    assert points_of(aggregate(b"t:5|g\nt:0|g\nt:-4|g")) == [("value", "t", -4.0, {})]


def test_the_gauge_memory_is_bounded():
    agg = aggregate(b"g0:1|g", max_series=GAUGE_MEMORY + 10)
    agg.flush(now=NOW)
    for start in range(1, GAUGE_MEMORY + 1, 5000):
        agg.add_packet("\n".join(f"g{i}:1|g" for i in range(start, start + 5000)).encode())
    agg.flush(now=NOW)
    assert len(agg._gauge_memory) == GAUGE_MEMORY
    agg.add_packet(b"g0:+1|g\ng1:+1|g")  # g0, the oldest, was forgotten: it starts from 0
    assert points_of(agg) == [("value", "g0", 1.0, {}), ("value", "g1", 2.0, {})]


def test_each_timer_histogram_and_distribution_sample_is_a_point():
    agg = aggregate(b"lat:10|ms\nlat:20|ms|@0.1\nlat:30|ms", b"size:1|h\nsize:1|h\nd:2.5|d|#x:y")
    assert points_of(agg) == [
        ("value", "d", 2.5, {"x": "y"}),
        ("value", "lat", 10.0, {}),
        ("value", "lat", 20.0, {}),
        ("value", "lat", 30.0, {}),
        ("value", "size", 1.0, {}),
        ("value", "size", 1.0, {}),
    ]


def test_a_set_counts_its_distinct_members_per_flush():
    agg = aggregate(b"users:alice|s\nusers:bob|s\nusers:alice|s\nusers:carol|s|#app:web")
    assert points_of(agg) == [
        ("value", "users", 1.0, {"app": "web"}),
        ("value", "users", 2.0, {}),
    ]
    agg.add_packet(b"users:alice|s")
    assert points_of(agg) == [("value", "users", 1.0, {})]


def test_points_take_the_flush_time_and_the_state_starts_afresh():
    agg = aggregate(b"a:1|c\nb:1|g\nc:1|ms\nd:x|s")
    flush = agg.flush(now=NOW)
    assert {p.timestamp for p in flush.points} == {NOW}
    assert flush.stats.lines == 4
    assert agg.flush(now=NOW).points == []
    assert agg.stats.lines == 0


def test_a_counter_sum_past_the_value_limit_is_dropped_at_flush():
    agg = aggregate(b"big:9e14|c\nbig:9e14|c\nok:1|c")
    flush = agg.flush(now=NOW)
    assert [(p.name, p.value) for p in flush.points] == [("ok", 1.0)]
    assert flush.stats.out_of_range == 1


def test_several_lines_per_packet_with_crlf_and_blank_lines():
    agg = aggregate(b"a:1|c\r\nb:2|c\n\n\nc:3|c\n")
    assert agg.stats.lines == 3
    assert [p[1:3] for p in points_of(agg)] == [("a", 1.0), ("b", 2.0), ("c", 3.0)]


# --- bounds -----------------------------------------------------------------------------------


def test_series_past_the_bound_are_dropped_and_counted_at_the_edge():
    agg = aggregate(max_series=3)
    agg.add_packet(b"a:1|c\nb:1|g\nc:1|ms")  # exactly the bound
    agg.add_packet(b"a:1|c\nc:2|ms")  # known series still take lines
    agg.add_packet(b"d:1|c\ne:1|s\nd:1|c\na:1|c|#new:tag")
    flush = agg.flush(now=NOW)
    assert sorted((p.name, p.value) for p in flush.points) == [
        ("a", 2.0),
        ("b", 1.0),
        ("c", 1.0),
        ("c", 2.0),
    ]
    assert flush.stats.series_dropped == 3  # d, e, a{new:tag}
    assert flush.stats.series_dropped_lines == 4
    # The next interval has room again.
    agg.add_packet(b"d:1|c")
    assert points_of(agg) == [("counter", "d", 1.0, {})]


def test_timer_samples_and_set_members_past_the_bound_are_dropped_and_counted():
    agg = aggregate(b"t:1|ms\nt:2|ms\nu:a|s\nu:a|s\nu:b|s\nt:3|ms", max_samples=4)
    flush = agg.flush(now=NOW)
    assert sorted((p.name, p.value) for p in flush.points) == [
        ("t", 1.0),
        ("t", 2.0),
        ("u", 2.0),
    ]
    assert flush.stats.samples_dropped == 1


# --- garbage ----------------------------------------------------------------------------------


def test_garbage_is_counted_never_raised():
    rng = random.Random(16)
    agg = aggregate()
    packets = [os.urandom(rng.randint(1, 2000)) for _ in range(200)]
    packets += [
        b"",
        b"\n\n",
        b"\xff\xfe\x00:1|c",
        b"ok:1|c\n\xc3(:1|c\nok:1|c",  # one line not UTF-8 among good ones
        b"\x00" * 65507,
        b"a:" + b"9" * 65000 + b"|c",
        b":" * 1000,
        b"|" * 1000,
        "名前:1|c".encode(),
        b"x:1|c|#" + b",".join(b"k%d" % i for i in range(5000)),
    ]
    for packet in packets:
        agg.add_packet(packet)
    flush = agg.flush(now=NOW)
    assert ("ok", 2.0) in [(p.name, p.value) for p in flush.points]
    assert flush.stats.invalid >= 200
    assert flush.stats.invalid + 2 <= flush.stats.lines


def test_a_64_kb_datagram_of_good_lines_is_taken_whole():
    lines = [f"big.{i}:1|c" for i in range(6000)]
    data = "\n".join(lines).encode()[:65507]
    data = data[: data.rindex(b"\n")]
    agg = aggregate(data, max_series=10_000)
    flush = agg.flush(now=NOW)
    assert len(flush.points) == data.count(b"\n") + 1
    assert flush.stats.invalid == 0


def test_invalid_lines_are_logged_once_a_minute_per_name(caplog):
    clock = [1000.0]
    agg = Aggregator(max_series=10, max_samples=10, invalid_log=InvalidLog(clock=lambda: clock[0]))
    with caplog.at_level(logging.WARNING, logger="protocols.statsd"):
        for _ in range(5):
            agg.add_packet(b"bad:x|c\nworse:1|q")
        clock[0] += 59.9
        agg.add_packet(b"bad:x|c")
        clock[0] += 0.1
        agg.add_packet(b"bad:x|c")
    records = [r for r in caplog.records if r.message == "statsd line refused"]
    assert [(r.metric, r.not_logged_since) for r in records] == [
        ("bad", 0),
        ("worse", 0),
        ("bad", 5),
    ]
    assert records[0].line == "bad:x|c"
    assert "not a number" in records[0].reason
    assert agg.stats.invalid == 12


def test_a_flood_of_distinct_bad_names_logs_at_most_the_global_bound(caplog):
    agg = aggregate()
    with caplog.at_level(logging.WARNING, logger="protocols.statsd"):
        agg.add_packet("\n".join(f"n{i}:x|c" for i in range(LOG_PER_MINUTE + 50)).encode())
    assert len([r for r in caplog.records if r.message == "statsd line refused"]) == LOG_PER_MINUTE
    assert agg.stats.invalid == LOG_PER_MINUTE + 50


# --- storing a flush --------------------------------------------------------------------------


def point(kind: str, name: str, value: float = 1.0, **tags: str) -> PointInput:
    return PointInput(kind, name, value, NOW, tags)


@pytest.mark.django_db
def test_a_name_stored_with_the_other_type_is_dropped_and_the_others_stored():
    points_ingest(points=[point("value", "shop.checkout", 5.0)])
    writer = FlushWriter(max_kept=100)
    outcome = writer.write(
        [
            point("counter", "shop.checkout"),
            point("counter", "shop.other", 2.0),
            point("counter", "both.new"),
            point("value", "both.new", 3.0),
        ]
    )
    assert outcome.stored == 1
    assert outcome.conflicts == {"shop.checkout": 1, "both.new": 2}
    assert not Metric.objects.filter(name="both.new").exists()
    assert MetricPoint.objects.filter(metric__name="shop.checkout").count() == 1


@pytest.mark.django_db
def test_a_metric_past_its_series_limit_keeps_existing_and_fitting_series(settings, caplog):
    settings.METRIC_MAX_SERIES = 3
    points_ingest(points=[point("counter", "hits", shard="0")])
    writer = FlushWriter(max_kept=100)
    flood = [point("counter", "hits", shard=str(i)) for i in range(6)]
    with caplog.at_level(logging.WARNING, logger="protocols.statsd"):
        outcome = writer.write([*flood, point("counter", "calm")])
    assert outcome.stored == 4  # shard 0 (existing), shards 1 and 2 (room for two), calm
    assert outcome.series_limited == {"hits": 3}
    shards = Series.objects.filter(metric__name="hits").values_list("tags__shard", flat=True)
    assert sorted(shards) == ["0", "1", "2"]
    assert any("has its limit of 3 tag sets" in r.message for r in caplog.records)


@pytest.mark.django_db
def test_a_database_error_that_is_not_a_lost_connection_drops_the_flush_and_not_later_ones():
    writer = FlushWriter(max_kept=100)
    # Longer than the name column: refused by PostgreSQL (no parser would let it through).
    outcome = writer.write([point("counter", "x" * 300), point("counter", "fine")])
    assert (outcome.stored, outcome.lost, outcome.kept) == (0, 2, 0)
    assert "too long" in outcome.error
    assert writer.kept == 0
    assert writer.write([point("counter", "fine")]).stored == 1
