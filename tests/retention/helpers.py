"""Reading and writing the point tables directly, for the retention tests."""

from datetime import date, datetime

from django.db import connection

from metrics.services import PointInput, points_ingest
from tests.helpers import POINT_TABLES

__all__ = ["POINT_TABLES"]


def ingest(*moments: datetime, name: str = "cpu", value: float = 1.0) -> None:
    """Write one point per moment through the real write path (points and rollups)."""
    points_ingest(points=[PointInput("value", name, value, moment) for moment in moments])


def point_times() -> list[datetime]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT recorded_at FROM metric_points ORDER BY recorded_at")
        return [row[0] for row in cursor.fetchall()]


def buckets(table: str) -> list[datetime]:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT bucket FROM {table} ORDER BY bucket")
        return [row[0] for row in cursor.fetchall()]


def partition_exists(table: str, day: date) -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_class WHERE relname = %s",
            [f"{table}_{day:%Y%m%d}"],
        )
        return cursor.fetchone()[0] == 1


def row_counts() -> dict[str, int]:
    counts = {}
    with connection.cursor() as cursor:
        for table in (*POINT_TABLES, "idempotency_keys"):
            cursor.execute(f"SELECT count(*) FROM {table}")
            counts[table] = cursor.fetchone()[0]
    return counts
