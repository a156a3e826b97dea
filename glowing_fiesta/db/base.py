"""Django's PostgreSQL backend, with a health check that costs no round trip.

With CONN_HEALTH_CHECKS, Django checks a persistent connection before the first query of every
request, and its PostgreSQL backend does so with a `SELECT 1`: one more round trip on a
single-point write that otherwise makes one. A connection the server has closed (a restart, an
administrator's pg_terminate_backend, idle_session_timeout) always leaves something to read on
its socket: the server's FATAL message, or the end of the stream. So the check here looks at the
socket without waiting: nothing to read means the server has said nothing since the last reply
and the connection is as usable as a `SELECT 1` would find it; something to read, which an idle
connection never has otherwise, falls back to Django's `SELECT 1`.
"""

from __future__ import annotations

import select

from django.db.backends.postgresql import base


class DatabaseWrapper(base.DatabaseWrapper):
    def is_usable(self) -> bool:
        connection = self.connection
        if connection is None or connection.closed:
            return False
        try:
            readable, _, _ = select.select([connection.fileno()], [], [], 0)
        except (OSError, ValueError):
            return False
        if not readable:
            return True
        return super().is_usable()
