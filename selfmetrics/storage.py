"""The hand-written SQL of the own figures: PostgreSQL's view of its connections.

pg_stat_activity is a server view with one row per backend, not a table of the project, so no
model maps it; each read below is one short query at every scrape.
"""

from __future__ import annotations

from django.db import connection


def connections_ours(*, prefix: str) -> list[tuple[str, str, int]]:
    """(role, state, connections) of this service's connections to this database, told apart
    by their application_name `<prefix>-<role>`; state "unknown" where PostgreSQL gives none."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT substr(application_name, %s), coalesce(state, 'unknown'), count(*)
            FROM pg_stat_activity
            WHERE datname = current_database() AND starts_with(application_name, %s)
            GROUP BY 1, 2
            """,
            [len(prefix) + 1, prefix],
        )
        return cursor.fetchall()


def connections_server() -> tuple[int, int]:
    """Client connections to the server, of every application, and its max_connections."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FILTER (WHERE backend_type = 'client backend'), "
            "current_setting('max_connections')::int FROM pg_stat_activity"
        )
        return cursor.fetchone()
