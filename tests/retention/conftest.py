from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection

from tests.helpers import truncate_point_tables


@pytest.fixture
def now() -> datetime:
    """Today at 12:00 UTC: cutoffs then fall mid-day, far from any partition boundary."""
    return datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)


@pytest.fixture
def clean_point_tables():
    """For `transaction=True` tests: empty the hand-made tables and drop old partitions after."""
    yield
    first_kept = datetime.now(UTC).date() - timedelta(days=8)
    truncate_point_tables()
    with connection.cursor() as cursor:
        for parent in ("metric_points", "metric_rollup_minute"):
            cursor.execute(
                """
                SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                WHERE i.inhparent = %s::regclass
                """,
                [parent],
            )
            for (name,) in cursor.fetchall():
                if datetime.strptime(name[-8:], "%Y%m%d").date() < first_kept:
                    cursor.execute(f'DROP TABLE "{name}"')
