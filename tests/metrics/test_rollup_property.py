import math
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metrics.services import PointInput, points_ingest

pytestmark = pytest.mark.django_db

NOW = datetime.now(UTC)

point_strategy = st.tuples(
    st.sampled_from(["a", "b"]),  # metric suffix
    st.floats(min_value=-1e6, max_value=1e6, allow_nan=False),
    st.integers(min_value=-3 * 86400, max_value=3 * 86400),  # seconds from now
    st.sampled_from([{}, {"host": "x"}, {"host": "y", "dc": "eu"}]),
)


def _rollups(table: str, names: list[str]) -> dict:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT r.series_id, r.bucket, r.count, r.sum, r.min, r.max, "
            + ("NULL, NULL " if table == "metric_rollup_minute" else "r.last, r.last_at ")
            + f"FROM {table} r "
            "JOIN series s ON s.id = r.series_id JOIN metrics m ON m.id = s.metric_id "
            "WHERE m.name = ANY(%s)",
            [names],
        )
        return {(row[0], row[1]): row[2:] for row in cursor.fetchall()}


def _from_raw(width: str, names: list[str]) -> dict:
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT p.series_id, date_bin('{width}', p.recorded_at, timestamptz 'epoch'), "
            "count(*), sum(p.value), min(p.value), max(p.value), max(p.recorded_at) "
            "FROM metric_points p "
            "JOIN metrics m ON m.id = p.metric_id WHERE m.name = ANY(%s) GROUP BY 1, 2",
            [names],
        )
        return {(row[0], row[1]): row[2:] for row in cursor.fetchall()}


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(writes=st.lists(st.lists(point_strategy, min_size=1, max_size=150), min_size=1, max_size=4))
def test_every_rollup_equals_the_aggregate_of_its_raw_points(writes):
    prefix = uuid.uuid4().hex[:8]
    names = [f"{prefix}.a", f"{prefix}.b"]
    for write in writes:
        points_ingest(
            points=[
                PointInput("counter", f"{prefix}.{m}", value, NOW + timedelta(seconds=offset), tags)
                for m, value, offset, tags in write
            ]
        )
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT p.series_id, p.recorded_at, array_agg(p.value) FROM metric_points p "
            "JOIN metrics m ON m.id = p.metric_id WHERE m.name = ANY(%s) GROUP BY 1, 2",
            [names],
        )
        values_at = {(row[0], row[1]): row[2] for row in cursor.fetchall()}
    for table, width in (
        ("metric_rollup_minute", "1 minute"),
        ("metric_rollup_15m", "15 minutes"),
        ("metric_rollup_hour", "1 hour"),
        ("metric_rollup_day", "1 day"),
    ):
        rollups, raw = _rollups(table, names), _from_raw(width, names)
        assert rollups.keys() == raw.keys()
        for key, (count, total, low, high, latest) in raw.items():
            r_count, r_total, r_low, r_high, r_last, r_last_at = rollups[key]
            assert (r_count, r_low, r_high) == (count, low, high)
            assert math.isclose(r_total, total, rel_tol=1e-9, abs_tol=1e-6)
            # The bucket's latest point (the coarser tables keep it): its time, and the value
            # of a point at that time.
            if table != "metric_rollup_minute":
                assert r_last_at == latest
                assert r_last in values_at[(key[0], latest)]
