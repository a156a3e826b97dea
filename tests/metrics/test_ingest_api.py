import json
from datetime import UTC, datetime, timedelta

import pytest
from django.db.models import Sum

from glowing_fiesta.parsers import TypedBody
from idempotency.services import fingerprint
from metrics.json_points import BatchRecord, batch_decode, parse_batch
from metrics.models import Metric, MetricPoint, RollupMinute, Series
from metrics.points import PointErrors, parse_point
from tests.helpers import assert_problem, post

pytestmark = pytest.mark.django_db


@pytest.fixture
def frozen_now(monkeypatch):
    """Pin "now" so window edges (exactly 7 days) are exact."""
    now = datetime.now(UTC).replace(microsecond=0)
    monkeypatch.setattr("django.utils.timezone.now", lambda: now)
    return now


def fields_of(body):
    return {(e.get("index"), e["field"]) for e in body["errors"]}


# --- single points ---------------------------------------------------------------------------


def test_counter_defaults_to_one_and_returns_the_stored_point(api_client, frozen_now):
    response = post(api_client, "/api/metrics/counter", {"name": "web.hits", "tags": {"host": "a"}})
    assert response.status_code == 201
    assert response.json() == {
        "name": "web.hits",
        "type": "counter",
        "value": 1.0,
        "timestamp": frozen_now.isoformat().replace("+00:00", "Z"),
        "tags": {"host": "a"},
    }
    point = MetricPoint.objects.get()
    assert (point.value, point.recorded_at) == (1.0, frozen_now)
    assert Metric.objects.get().type == "counter"
    assert Series.objects.get().tags == {"host": "a"}


def test_value_is_stored_with_its_timestamp_in_utc(api_client):
    when = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
    body = {"name": "cpu", "value": 0.75, "timestamp": when.isoformat()}
    response = post(api_client, "/api/metrics/value", body)
    assert response.status_code == 201, response.content
    assert response.json()["timestamp"] == when.isoformat().replace("+00:00", "Z")
    assert MetricPoint.objects.get().recorded_at == when


def test_iso_timestamp_with_offset_and_unix_seconds_mean_the_same_instant(api_client):
    when = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    berlin = when.astimezone(__import__("zoneinfo").ZoneInfo("Europe/Berlin")).isoformat()
    post(api_client, "/api/metrics/value", {"name": "t", "value": 1, "timestamp": berlin})
    post(api_client, "/api/metrics/value", {"name": "t", "value": 2, "timestamp": when.timestamp()})
    assert set(MetricPoint.objects.values_list("recorded_at", flat=True)) == {when}


def test_value_endpoint_requires_a_value(api_client):
    body = assert_problem(post(api_client, "/api/metrics/value", {"name": "cpu"}), 400)
    assert fields_of(body) == {(None, "value")}
    assert Metric.objects.count() == 0


def test_negative_counter_increment_is_a_decrement(api_client):
    post(api_client, "/api/metrics/counter", {"name": "queue", "value": 5})
    post(api_client, "/api/metrics/counter", {"name": "queue", "value": -2})
    assert MetricPoint.objects.aggregate(total=Sum("value"))["total"] == 3


def test_type_conflict_is_409_naming_metric_and_type_and_stores_nothing(api_client):
    post(api_client, "/api/metrics/counter", {"name": "jobs"})
    body = assert_problem(post(api_client, "/api/metrics/value", {"name": "jobs", "value": 3}), 409)
    assert "jobs" in body["detail"] and "counter" in body["detail"]
    assert MetricPoint.objects.count() == 1


def test_two_increments_at_one_timestamp_both_count(api_client):
    when = datetime.now(UTC).replace(microsecond=0).timestamp()
    for _ in range(2):
        post(api_client, "/api/metrics/counter", {"name": "c", "timestamp": when})
    rollup = RollupMinute.objects.get()
    assert (rollup.count, rollup.sum) == (2, 2.0)
    assert MetricPoint.objects.count() == 2


# --- names, values, tags, timestamps at their edges --------------------------------------


@pytest.mark.parametrize(
    ("name", "status"),
    [
        ("a" * 191, 201),
        ("a" * 192, 400),
        ("", 400),
        ("svc.api-v2:latency/p_99", 201),
        ("has space", 400),
        ("émoji", 400),
        ("trailing\n", 400),
        (["list"], 400),
    ],
)
def test_name_rules(api_client, name, status):
    response = post(api_client, "/api/metrics/counter", {"name": name})
    assert response.status_code == status
    assert Metric.objects.count() == (status == 201)


@pytest.mark.parametrize(
    ("value", "status"),
    [
        (1e15, 201),
        (-1e15, 201),
        (1.000001e15, 400),
        (True, 400),
        ("12", 400),
        (None, 400),
        ([1], 400),
        (0, 201),
        (3, 201),
    ],
)
def test_value_must_be_a_finite_json_number_within_1e15(api_client, value, status):
    response = post(api_client, "/api/metrics/value", {"name": "v", "value": value})
    assert response.status_code == status, response.content
    assert MetricPoint.objects.count() == (status == 201)


def test_nan_and_infinity_tokens_are_rejected(api_client):
    for token in ("NaN", "Infinity", "-Infinity"):
        raw = '{"name": "v", "value": ' + token + "}"
        response = api_client.post("/api/metrics/value", raw, content_type="application/json")
        assert_problem(response, 400)
    assert MetricPoint.objects.count() == 0


@pytest.mark.parametrize(
    ("offset", "status", "hint"),
    [
        (timedelta(days=-7), 201, None),
        (timedelta(days=-7, seconds=-1), 400, "older"),
        (timedelta(days=7), 201, None),
        (timedelta(days=7, seconds=1), 400, "future"),
    ],
)
def test_timestamp_window_is_seven_days_each_way(api_client, frozen_now, offset, status, hint):
    when = (frozen_now + offset).timestamp()
    response = post(api_client, "/api/metrics/counter", {"name": "c", "timestamp": when})
    assert response.status_code == status
    if hint:
        assert hint in response.json()["errors"][0]["message"]


@pytest.mark.parametrize(
    ("timestamp", "hint"),
    [
        ("2026-11-29T12:00:00", "offset"),
        ("2026-11-29", "date alone"),
        ("yesterday", "ISO 8601"),
        (True, "Unix seconds"),
    ],
)
def test_ambiguous_or_malformed_timestamps_are_rejected(api_client, timestamp, hint):
    body = assert_problem(
        post(api_client, "/api/metrics/counter", {"name": "c", "timestamp": timestamp}), 400
    )
    assert hint in body["errors"][0]["message"]


def test_a_millisecond_timestamp_is_called_out(api_client):
    millis = datetime.now(UTC).timestamp() * 1000
    body = assert_problem(
        post(api_client, "/api/metrics/counter", {"name": "c", "timestamp": millis}), 400
    )
    assert "milliseconds" in body["errors"][0]["message"]


def test_ten_tags_are_accepted_and_eleven_are_not(api_client):
    ten = {f"k{i}": "v" for i in range(10)}
    assert post(api_client, "/api/metrics/counter", {"name": "c", "tags": ten}).status_code == 201
    eleven = {**ten, "k10": "v"}
    body = assert_problem(
        post(api_client, "/api/metrics/counter", {"name": "c", "tags": eleven}), 400
    )
    assert fields_of(body) == {(None, "tags")}
    assert Series.objects.count() == 1


@pytest.mark.parametrize(
    ("tags", "status"),
    [
        ({"_k.v-1": "x" * 191}, 201),
        ({"k": "x" * 192}, 400),
        ({"k": ""}, 400),
        ({"k": "tab\there"}, 400),
        ({"1k": "v"}, 400),
        ({"k" * 64: "v"}, 201),
        ({"k" * 65: "v"}, 400),
        ({"k": 1}, 400),
        (["k", "v"], 400),
    ],
)
def test_tag_key_and_value_rules(api_client, tags, status):
    response = post(api_client, "/api/metrics/counter", {"name": "c", "tags": tags})
    assert response.status_code == status


def test_a_write_past_the_series_limit_is_422_and_stores_nothing(api_client, settings):
    settings.METRIC_MAX_SERIES = 2
    for host in ("a", "b"):
        assert (
            post(
                api_client, "/api/metrics/counter", {"name": "c", "tags": {"host": host}}
            ).status_code
            == 201
        )
    body = assert_problem(
        post(api_client, "/api/metrics/counter", {"name": "c", "tags": {"host": "c"}}), 422
    )
    assert "2" in body["detail"]
    assert (
        post(api_client, "/api/metrics/counter", {"name": "c", "tags": {"host": "a"}}).status_code
        == 201
    )
    assert Series.objects.count() == 2
    assert MetricPoint.objects.count() == 3


# --- bodies ---------------------------------------------------------------------------------


def test_unknown_fields_are_named(api_client):
    body = assert_problem(
        post(api_client, "/api/metrics/counter", {"name": "c", "valu": 2, "extra": 1}), 400
    )
    assert fields_of(body) == {(None, "extra"), (None, "valu")}


def test_only_json_bodies_are_accepted(api_client):
    response = api_client.post("/api/metrics/counter", "name=c", content_type="text/plain")
    assert_problem(response, 415)


@pytest.mark.parametrize("raw", ['{"name": ', "[1, 2", "\xff", '"just a string"', "[]"])
def test_malformed_json_or_a_non_object_is_400(api_client, raw):
    response = api_client.post("/api/metrics/counter", raw, content_type="application/json")
    assert_problem(response, 400)


def test_absurdly_nested_json_is_400_not_500(api_client):
    raw = "[" * 100_000 + "]" * 100_000
    assert_problem(api_client.post("/api/metrics/batch", raw, content_type="application/json"), 400)


def test_body_of_exactly_512_kib_is_read_and_one_byte_more_is_413(api_client):
    limit = 512 * 1024
    base = '{"name": "c"}'
    exact = base + " " * (limit - len(base))
    response = api_client.post("/api/metrics/counter", exact, content_type="application/json")
    assert response.status_code == 201
    assert_problem(
        api_client.post("/api/metrics/counter", exact + " ", content_type="application/json"), 413
    )
    assert MetricPoint.objects.count() == 1


# --- batches --------------------------------------------------------------------------------


def _batch(n, **point):
    return {"points": [{"type": "counter", "name": "b", **point} for _ in range(n)]}


def test_batch_of_1000_is_stored_and_counted(api_client):
    response = post(api_client, "/api/metrics/batch", _batch(1000, value=2))
    assert response.status_code == 201
    assert response.json() == {"processed": 1000}
    assert MetricPoint.objects.count() == 1000
    assert RollupMinute.objects.aggregate(n=Sum("count"), s=Sum("sum")) == {"n": 1000, "s": 2000}


@pytest.mark.parametrize("n", [0, 1001])
def test_batch_size_outside_1_to_1000_is_400(api_client, n):
    body = assert_problem(post(api_client, "/api/metrics/batch", _batch(n)), 400)
    assert fields_of(body) == {(None, "points")}


def test_batch_lists_every_bad_point_and_stores_nothing(api_client):
    batch = _batch(1000)
    batch["points"][0]["value"] = "1"
    batch["points"][500]["name"] = "bad name"
    batch["points"][999] = {"type": "gauge", "name": "b", "value": 1, "tags": {"k": 2}}
    batch["points"][998]["type"] = ["counter"]
    batch["points"][997]["tags"] = {"k\n": "v"}
    body = assert_problem(post(api_client, "/api/metrics/batch", batch), 400)
    assert fields_of(body) == {
        (0, "value"),
        (500, "name"),
        (997, "tags"),
        (998, "type"),
        (999, "type"),
        (999, "tags"),
    }
    assert Metric.objects.count() == 0
    assert MetricPoint.objects.count() == 0


def test_batch_with_a_type_conflict_stores_nothing(api_client):
    post(api_client, "/api/metrics/counter", {"name": "old"})
    batch = {
        "points": [
            {"type": "value", "name": "fresh", "value": 1},
            {"type": "value", "name": "old", "value": 1},
        ]
    }
    body = assert_problem(post(api_client, "/api/metrics/batch", batch), 409)
    assert body["errors"][0]["index"] == 1
    assert not Metric.objects.filter(name="fresh").exists()
    assert MetricPoint.objects.count() == 1


def test_batch_naming_one_metric_with_two_types_is_409(api_client):
    batch = {
        "points": [{"type": "value", "name": "m", "value": 1}, {"type": "counter", "name": "m"}]
    }
    assert_problem(post(api_client, "/api/metrics/batch", batch), 409)
    assert Metric.objects.count() == 0


@pytest.mark.parametrize("name", ["counter", "batch"])
def test_a_metric_named_like_an_ingestion_path_can_still_be_queried(make_api_client, name):
    writer, reader = make_api_client(scopes=["write"]), make_api_client(scopes=["read"])
    batch = {"points": [{"type": "counter", "name": name, "value": 3}]}
    assert post(writer, "/api/metrics/batch", batch).status_code == 201
    response = reader.get(f"/api/metrics/{name}", {"aggregation": "sum", "interval": "day"})
    assert response.status_code == 200
    assert response.json()["metric"] == name
    assert sum(b["value"] for b in response.json()["buckets"]) == 3
    assert writer.get(f"/api/metrics/{name}").status_code == 403
    assert post(reader, "/api/metrics/batch", batch).status_code == 403


def test_a_batch_validates_every_point_the_same_as_a_single_point(api_client, frozen_now):
    """The batch's quick check and the full one agree on edge cases, valid and invalid alike,
    and so do the records of the typed decoder where it takes the body."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    week = 7 * 86400
    stamps = st.one_of(
        st.none(),
        st.floats(allow_nan=True, allow_infinity=True),
        st.integers(-(10**12), 10**12),
        st.sampled_from(
            [frozen_now.timestamp() + d for d in (-week, -week + 1, 0, week - 1, week)]
        ),
        st.sampled_from(["2026-01-01", "2026-01-01T00:00:00", frozen_now.isoformat(), "x"]),
    )
    values = st.one_of(
        st.none(), st.booleans(), st.integers(-(10**16), 10**16), st.floats(), st.just("1")
    )
    tags = st.one_of(
        st.none(),
        st.just([]),
        st.dictionaries(
            st.sampled_from(["host", "1bad", "a" * 64, "a" * 65]),
            st.one_of(st.sampled_from(["x", "", "\x00", "y" * 191, "y" * 192]), st.integers()),
            max_size=3,
        ),
    )
    edges = {
        "type": st.sampled_from(["counter", "value", "gauge", None, ["value"]]),
        "name": st.sampled_from(["cpu", "a b", "", "x" * 191, "x" * 192, None, 5]),
        "value": values,
        "timestamp": stamps,
        "tags": tags,
        "extra": st.just(1),
    }
    valid = {"type": "value", "name": "cpu", "value": 1.5, "timestamp": frozen_now.timestamp()}

    @st.composite
    def point(draw):
        # A valid point with one or two fields changed (or dropped), so each edge is reached.
        raw = dict(valid)
        for field in draw(st.lists(st.sampled_from(sorted(edges)), min_size=1, max_size=2)):
            if draw(st.booleans()) and field in raw:
                del raw[field]
            else:
                raw[field] = draw(edges[field])
        return raw

    @settings(max_examples=400, deadline=None)
    @given(raw=point())
    def agree(raw):
        try:
            alone = ("ok", parse_point(raw, kind=None, now=frozen_now, index=0))
        except PointErrors as exc:
            alone = ("errors", exc.errors)
        try:
            batched = ("ok", parse_batch({"points": [raw]}, now=frozen_now)[0])
        except PointErrors as exc:
            batched = ("errors", exc.errors)
        assert batched == alone
        body = json.dumps({"points": [raw]}).encode()
        records = batch_decode(body)
        if records is None:
            return  # not the usual shape: such a body takes the generic decoder, as above
        try:
            typed = ("ok", parse_batch(records, now=frozen_now)[0])
        except PointErrors as exc:
            typed = ("errors", exc.errors)
        try:
            plain = ("ok", parse_batch(json.loads(body), now=frozen_now)[0])
        except PointErrors as exc:
            plain = ("errors", exc.errors)
        assert typed == plain

    agree()


def test_the_typed_decoder_takes_the_usual_batches_and_leaves_the_rest_to_the_generic_one():
    usual = b'{"points": [{"type": "counter", "name": "a", "value": 2, "tags": {"h": "x"}}]}'
    assert isinstance(batch_decode(usual), BatchRecord)
    for body in [
        b'{"points": [{"type": "counter", "name": "a", "value": true}]}',  # a bool is no number
        b'{"points": [{"type": "counter", "name": "a", "value": null}]}',
        b'{"points": [{"type": "counter", "name": "a", "value": 1e400}]}',
        b'{"points": [{"type": "counter", "name": "a", "value": NaN}]}',
        b'{"points": [{"type": "counter", "name": "\\ud800"}]}',  # a lone surrogate
        b'{"points": [{"type": "counter", "name": "a", "extra": 1}]}',
        b'{"points": [{"name": "a"}]}',
        b'{"points": [], "other": 1}',
        b'{"points": [{"type": "counter", "name": "a"}]} trailing',
        b"\xff",
    ]:
        assert batch_decode(body) is None, body


def test_an_idempotent_batch_retry_is_replayed_whichever_decoder_read_it(api_client):
    body = {"points": [{"type": "value", "name": "retry.me", "value": 1, "tags": {"h": "x"}}]}
    raw = json.dumps(body).encode()
    # The digest is the generic decoder's, so a key first used before the typed decoder (or with
    # a body it does not take) still matches.
    assert fingerprint("POST", "/p", TypedBody(raw, batch_decode(raw))) == fingerprint(
        "POST", "/p", json.loads(raw)
    )
    headers = {"HTTP_IDEMPOTENCY_KEY": "batch-1"}
    first = api_client.post("/api/metrics/batch", raw, content_type="application/json", **headers)
    again = api_client.post("/api/metrics/batch", raw, content_type="application/json", **headers)
    assert (first.status_code, again.status_code) == (201, 201)
    assert again["Idempotent-Replayed"] == "true"
    assert MetricPoint.objects.count() == 1
