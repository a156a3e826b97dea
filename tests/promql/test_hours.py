"""Recent whole hours kept in the process (promql/hours.py): through the query API, every answer
is the one a fresh read gives, before and after a late write into a kept hour, a delete, and
with a budget too small to keep them all."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.test import override_settings

from promql import hours
from tests.helpers import ingest
from tests.metrics.test_delete_api import purge_all

pytestmark = pytest.mark.django_db

# (query, step): raw points at steps of 15 and 30 s; at 60 s the range functions read the minute
# rollups and the points exactly on the windows' edges.
QUERIES = (
    ("temp", 15),
    ("increase(hits[1m])", 15),
    ("avg_over_time(temp[30s])", 30),
    ("max_over_time(temp[1m])", 60),
    ("sum(rate(hits[5m]))", 60),
    ("count_over_time(temp[2m])", 60),
)


@pytest.fixture
def base() -> datetime:
    """Three whole hours ago: the range holds two whole hours and parts of two more."""
    return datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)


def _load(base: datetime) -> None:
    points, counts = [], []
    for k in range(3 * 360 + 60):
        at = base - timedelta(minutes=10) + timedelta(seconds=10 * k, microseconds=250 * (k % 7))
        points.append((float(k % 97) / 4, at, {"host": "a" if k % 3 else "b"}))
        counts.append((float(k % 5), at, {"host": "a"}))
    # On the first microsecond of the first kept hour and of the partial one after the kept
    # hours, and on the last microsecond before each.
    for hour in (base + timedelta(hours=1), base + timedelta(hours=2)):
        points += [
            (500.0, hour, {"host": "a"}),
            (600.0, hour - timedelta(microseconds=1), {"host": "a"}),
        ]
    ingest("value", "temp", *points)
    ingest("counter", "hits", *counts)


def _answers(client, base: datetime) -> dict:
    """Each query over a range with partial hours on both sides of the kept ones: off the hours
    and off the steps at 15 and 30 s, on whole minutes at 60 s (as Grafana aligns a range to its
    step), where the windows tile the minute rollups."""
    out = {}
    for query, step in QUERIES:
        start, end = base.timestamp() + 7.5, base.timestamp() + 3 * 3600 - 0.25
        if step == 60:
            start, end = base.timestamp() + 300, base.timestamp() + 3 * 3600 - 120
        response = client.post(
            "/api/v1/query_range", {"query": query, "start": start, "end": end, "step": step}
        )
        assert response.status_code == 200, response.content
        out[query] = response.json()["data"]["result"]
        assert out[query], query
    return out


def _fresh(client, base: datetime) -> dict:
    with override_settings(PROMQL_HOURS_CACHE_POINTS=0):
        return _answers(client, base)


def test_kept_hours_answer_as_a_fresh_read_through_a_late_write_and_a_delete(make_api_client, base):
    reader = make_api_client(scopes=["read"])
    _load(base)
    fresh = _fresh(reader, base)
    assert _answers(reader, base) == fresh  # read and kept
    assert _answers(reader, base) == fresh  # from the kept hours

    # A late point in the middle of a kept hour: its count moves, the hour is read again.
    late = base + timedelta(hours=1, minutes=30, seconds=3)
    ingest("value", "temp", (1000.0, late, {"host": "a"}))
    ingest("counter", "hits", (7.0, late, {"host": "a"}))
    # And one exactly on a minute, where a window of a step-60 query begins or ends.
    on_minute = base + timedelta(hours=1, minutes=40)
    ingest("counter", "hits", (9.0, on_minute, {"host": "a"}))
    ingest("value", "temp", (-5.0, on_minute, {"host": "a"}))
    after = _answers(reader, base)
    assert after != fresh
    assert after == _fresh(reader, base)
    assert any(value == "1000" for _, value in after["temp"][0]["values"])

    # A deleted metric is gone, and a new one of the same name starts empty.
    admin = make_api_client(scopes=["admin"])
    assert admin.delete("/api/metrics/temp").status_code in (202, 204)
    purge_all()
    ingest("value", "temp", (1.0, late, {"host": "a"}))
    again = _answers(reader, base)
    assert again == _fresh(reader, base)
    assert {value for series in again["temp"] for _, value in series["values"]} == {"1"}


@override_settings(PROMQL_HOURS_CACHE_POINTS=300)
def test_a_budget_too_small_for_every_hour_keeps_at_most_it_and_answers_the_same(
    make_api_client, base
):
    reader = make_api_client(scopes=["read"])
    _load(base)
    fresh = _fresh(reader, base)
    assert _answers(reader, base) == fresh
    assert _answers(reader, base) == fresh
    assert 0 < hours._held <= 300


@override_settings(RETENTION_DAYS=1)
def test_hours_retention_may_drop_are_never_kept(make_api_client, base):
    reader = make_api_client(scopes=["read"])
    _load(base)
    fresh = _fresh(reader, base)
    assert _answers(reader, base) == fresh
    assert hours._held == 0
