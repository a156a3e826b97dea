"""points_ingest_partial, the one write path of the protocols: it stores what it can and says
what it refused and why."""

from datetime import UTC, datetime

import pytest
from django.db import connection

from metrics.models import Metric, MetricPoint, Series
from metrics.services import (
    NAMESPACE,
    SERIES_LIMIT,
    TWO_TYPES,
    TYPE_CONFLICT,
    PointInput,
    points_ingest,
    points_ingest_partial,
)

pytestmark = pytest.mark.django_db

NOW = datetime.now(UTC)


def point(kind, name, value=1.0, **tags):
    return PointInput(kind, name, value, NOW, tags)


def test_points_of_a_metric_of_the_other_type_are_refused_and_the_rest_stored():
    points_ingest(points=[point("value", "temp", 20.0)])
    result = points_ingest_partial(
        points=[point("counter", "temp"), point("value", "temp", 21.0), point("counter", "hits")]
    )
    assert result.stored == 2
    [(index, refusal)] = result.refused
    assert (index, refusal.reason, refusal.metric_type) == (0, TYPE_CONFLICT, "value")
    assert result.retries == 0


def test_a_new_metric_given_both_types_stores_neither():
    result = points_ingest_partial(points=[point("counter", "both"), point("value", "both", 2.0)])
    assert result.stored == 0
    assert [(i, r.reason) for i, r in result.refused] == [(0, TWO_TYPES), (1, TWO_TYPES)]
    assert not Metric.objects.filter(name="both").exists()


def test_a_conflict_that_commits_after_the_look_up_is_retried_without_its_metric(monkeypatch):
    Metric.objects.create(name="raced", type="counter")
    monkeypatch.setattr("metrics.services._existing_types", lambda wanted: {})
    result = points_ingest_partial(points=[point("value", "raced"), point("value", "calm")])
    assert result.stored == 1
    [(index, refusal)] = result.refused
    assert (index, refusal.reason, refusal.metric_type) == (0, TYPE_CONFLICT, None)
    assert result.retries == 1


def test_past_the_series_limit_the_metric_is_refused_whole_or_trimmed(settings):
    settings.METRIC_MAX_SERIES = 2
    flood = [point("counter", "wide", shard=str(n)) for n in range(3)]
    whole = points_ingest_partial(points=[*flood, point("counter", "calm")])
    assert whole.stored == 1
    assert {(i, r.reason, r.limit) for i, r in whole.refused} == {
        (0, SERIES_LIMIT, 2),
        (1, SERIES_LIMIT, 2),
        (2, SERIES_LIMIT, 2),
    }
    trimmed = points_ingest_partial(points=flood, trim_series=True)
    assert trimmed.stored == 2
    assert [i for i, _ in trimmed.refused] == [2]
    assert Series.objects.filter(metric__name="wide").count() == 2


def test_derived_points_are_made_in_the_writes_transaction_without_refused_names():
    points_ingest(points=[point("value", "gauge.now", 1.0)])
    calls = []

    def derive(excluded):
        calls.append((set(excluded), connection.in_atomic_block))
        return [point("counter", name) for name in ("made", "gauge.now") if name not in excluded]

    result = points_ingest_partial(
        points=[point("value", "gauge.now", 2.0)],
        derived={"made": "counter", "gauge.now": "counter"},
        derive=derive,
    )
    assert calls == [({"gauge.now"}, True)]
    assert result.stored == 2
    assert result.derived_refused["gauge.now"].metric_type == "value"
    assert MetricPoint.objects.filter(metric__name="made").count() == 1


def test_points_outside_the_allowed_names_are_refused_first_and_derive_skips_them():
    calls = []

    def derive(excluded):
        calls.append(set(excluded))
        return [point("counter", n) for n in ("team.made", "other.made") if n not in excluded]

    result = points_ingest_partial(
        points=[point("value", "team.a"), point("value", "other.b"), point("value", "team.c")],
        derived={"team.made": "counter", "other.made": "counter"},
        derive=derive,
        allowed=lambda name: name.startswith(("team.",)),
    )
    assert [(index, refusal.reason, refusal.name) for index, refusal in result.refused] == [
        (1, NAMESPACE, "other.b")
    ]
    assert result.derived_refused["other.made"].reason == NAMESPACE
    assert calls == [{"other.b", "other.made"}]
    assert result.stored == 3
    assert set(Metric.objects.values_list("name", flat=True)) == {"team.a", "team.c", "team.made"}
