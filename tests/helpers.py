"""Helpers shared by test folders."""

from django.db import connection

# Unmanaged (hand-made) tables: Django's flush after a transactional test leaves them alone.
POINT_TABLES = ("metric_points", "metric_rollup_minute", "metric_rollup_hour", "metric_rollup_day")


def truncate_point_tables() -> None:
    """Empty the point and rollup tables (for `transaction=True` tests, before and after)."""
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {', '.join(POINT_TABLES)}")
