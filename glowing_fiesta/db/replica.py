"""Reads that may go to a streaming replica, and the router that sends everything else to the
primary.

With `DATABASE_REPLICA_URL` set, settings.py adds the database alias `replica`. Nothing reads
from it unless a selector asks, by running its read through `replica_read(read)`, or by being
decorated with `replica_reads`:

    @replica.replica_reads
    def series_query(*, query): ...

Inside that call the ORM's reads (`ReplicaRouter.db_for_read`) and the raw SQL written against
`read_connection()` use the replica; every write, whatever the call, goes to the primary
(`db_for_write`). Everything outside such a call (authentication, idempotency, the outbox,
cumulative streams, every read that a write then depends on) reads the primary, as it did before
there was a replica: a read-then-write can only reach the replica by being written inside a
`replica_read`, which is reviewed where it is written, never by a setting.

The replica answers only while it is at most `REPLICA_MAX_LAG_SECONDS` behind:

- its lag is measured at most once a second per process: 0 when it has replayed all the WAL it
  has received from a primary it is streaming from (an idle primary commits nothing, so the
  last replayed commit's timestamp would make a current replica look ever later), else the age
  of the last transaction it replayed, `pg_last_xact_replay_timestamp()`;
- the lag counts the age of its own measurement, so data older than the bound is never read;
- a replica that cannot be reached (a short connect timeout), is not in recovery (promoted, or
  a misconfigured URL), or fails during a read is left alone for `DOWN_RECHECK_SECONDS`, and the
  read runs on the primary: the caller sees the primary's answer, never an error;
- read-your-writes: a key's successful write marks the key in Redis for the bound (plus the
  measurement's second), and the reads of a marked key go to the primary; so does every read
  while Redis cannot be asked, since the mark cannot be seen then.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Any, TypeVar

import psycopg
import psycopg.errors
from django.conf import settings
from django.core.cache import caches
from django.db import DEFAULT_DB_ALIAS, InterfaceError, OperationalError, connections
from django.db.backends.base.base import BaseDatabaseWrapper

from glowing_fiesta import failopen

logger = logging.getLogger(__name__)

T = TypeVar("T")

PRIMARY = DEFAULT_DB_ALIAS
REPLICA = "replica"
# How often a process measures the replica's lag, at most.
CHECK_SECONDS = 1.0
# How long a replica that failed (unreachable, not in recovery, an error mid-read) is left alone.
DOWN_RECHECK_SECONDS = 5.0
_MARK_PREFIX = "replica-wrote:"
# Failures of the replica, as Django wraps them and as a raw psycopg cursor raises them.
_REPLICA_ERRORS = (
    OperationalError,
    InterfaceError,
    psycopg.OperationalError,
    psycopg.InterfaceError,
)

# The alias this context reads from: the primary unless inside replica_read().
_read_alias: ContextVar[str] = ContextVar("gf_read_alias", default=PRIMARY)
# The API key of the request being served, for read-your-writes (None: no key, e.g. the admin).
_request_key: ContextVar[int | None] = ContextVar("gf_request_key", default=None)

# One line: whether the replica was usable when last measured, and how far behind it was.
_LAG_SQL = """
    SELECT pg_is_in_recovery(),
           pg_last_wal_receive_lsn() IS NOT NULL
             AND pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn()
             AND EXISTS (SELECT FROM pg_stat_wal_receiver),
           extract(epoch FROM clock_timestamp() - pg_last_xact_replay_timestamp())::float8
"""


class ReplicaRouter:
    """Reads go where the current `replica_read` sends them (the primary outside one); writes,
    relations and migrations are the primary's alone."""

    def db_for_read(self, model: type, **hints: Any) -> str:
        return _read_alias.get()

    def db_for_write(self, model: type, **hints: Any) -> str:
        return PRIMARY

    def allow_relation(self, obj1: Any, obj2: Any, **hints: Any) -> bool:
        return True

    def allow_migrate(self, db: str, app_label: str, **hints: Any) -> bool:
        # A replica is read-only: `migrate --database replica` does nothing instead of failing
        # half-way, and the default `migrate` never looks at it.
        return db == PRIMARY


def configured() -> bool:
    return REPLICA in settings.DATABASES


def read_connection() -> BaseDatabaseWrapper:
    """The connection this context reads from: what raw SQL in a selector must use."""
    return connections[_read_alias.get()]


def read_alias() -> str:
    return _read_alias.get()


class _Lag:
    """The last measurement of this process: when, and the lag then (None: not usable)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.measured_at = -1e18  # time.monotonic()
        self.lag: float | None = None
        self.retry_at = -1e18
        # Whether the last measurement found the replica past the bound (logged when it changes).
        self.lagging = False

    def reset(self) -> None:
        self.__init__()


_lag = _Lag()


def reset() -> None:
    """Forget the last measurement (tests, and after the settings change)."""
    _lag.reset()


def _down(reason: str, exc: BaseException | None = None) -> None:
    now = time.monotonic()
    _lag.lag = None
    _lag.measured_at = now
    _lag.retry_at = now + DOWN_RECHECK_SECONDS
    with contextlib.suppress(Exception):
        connections[REPLICA].close()
    logger.warning(
        "replica not used; reading from the primary",
        extra={
            "reason": reason,
            "error": f"{type(exc).__name__}: {exc}" if exc else None,
            "recheck_seconds": DOWN_RECHECK_SECONDS,
        },
    )


def _measure() -> None:
    try:
        with connections[REPLICA].cursor() as cursor:
            cursor.execute(_LAG_SQL)
            in_recovery, caught_up, replay_age = cursor.fetchone()
    except (OperationalError, InterfaceError) as exc:
        _down("unreachable", exc)
        return
    if not in_recovery:
        _down("not in recovery: not a streaming replica")
        return
    _lag.measured_at = time.monotonic()
    _lag.lag = 0.0 if caught_up else replay_age


def _note_lagging(lagging: bool, lag: float) -> None:
    """Log when reads start or stop going to the primary for the lag: once per change, not per
    read, so how long they did is in the log."""
    if lagging == _lag.lagging:
        return
    _lag.lagging = lagging
    figures = {"lag_seconds": round(lag, 3), "bound_seconds": settings.REPLICA_MAX_LAG_SECONDS}
    if lagging:
        logger.warning("replica lagging; reading from the primary", extra=figures)
    else:
        logger.info("replica within its lag bound", extra=figures)


def replica_lag() -> float | None:
    """The replica's lag in seconds as this process knows it (measured at most once a second,
    plus the age of that measurement); None when it may not be used."""
    if not configured():
        return None
    now = time.monotonic()
    if now >= _lag.retry_at and now - _lag.measured_at >= CHECK_SECONDS:
        with _lag.lock:
            if now - _lag.measured_at >= CHECK_SECONDS:
                _measure()
    if _lag.lag is None:
        return None
    return max(_lag.lag, 0.0) + (time.monotonic() - _lag.measured_at)


def _mark_key(key_id: int) -> str:
    return f"{_MARK_PREFIX}{key_id}"


def mark_ttl() -> int:
    """Seconds a write's mark lives: the bound, plus the second a measurement may be old."""
    return settings.REPLICA_MAX_LAG_SECONDS + int(CHECK_SECONDS) + 1


def writes_mark(*key_ids: int) -> None:
    """Record that these keys have just written: their reads go to the primary for the bound.
    Called after the write committed; a no-op without a replica."""
    if not configured() or not key_ids:
        return
    cache = caches["default"]
    failopen.call(
        "replica write mark",
        lambda: cache.set_many({_mark_key(k): 1 for k in set(key_ids)}, timeout=mark_ttl()),
        None,
    )


def _wrote_recently(key_id: int | None) -> bool:
    if key_id is None:
        return False
    cache = caches["default"]
    # Redis unavailable: the mark cannot be seen, so assume it is there.
    return bool(failopen.call("replica write mark", lambda: cache.get(_mark_key(key_id)), True))


def request_key_set(key_id: int | None) -> None:
    """The API key of the request being served (apikeys.base sets it after authentication and
    clears it with the response), for read-your-writes."""
    _request_key.set(key_id)


def choose() -> str:
    """Where a read asked for now should go: REPLICA or PRIMARY."""
    if not configured() or _read_alias.get() != PRIMARY:
        return _read_alias.get()
    lag = replica_lag()
    if lag is None:
        return PRIMARY
    lagging = lag > settings.REPLICA_MAX_LAG_SECONDS
    _note_lagging(lagging, lag)
    if lagging:
        return PRIMARY
    if _wrote_recently(_request_key.get()):
        return PRIMARY
    return REPLICA


@contextlib.contextmanager
def _reading(alias: str) -> Iterator[None]:
    token = _read_alias.set(alias)
    try:
        yield
    finally:
        _read_alias.reset(token)


def replica_read(read: Callable[[], T]) -> T:
    """`read()` with its reads on the replica when it may answer (see the module's doc), else
    on the primary. A connection error on the replica, or a query it cancels (a conflict with
    recovery), runs `read()` again on the primary: the caller never sees the replica fail."""
    alias = choose()
    if alias != REPLICA:
        return read()
    try:
        with _reading(REPLICA):
            return read()
    except _REPLICA_ERRORS as exc:
        cause = exc if isinstance(exc, psycopg.Error) else exc.__cause__
        if isinstance(cause, psycopg.errors.QueryCanceled):
            raise  # the query's own time limit: the caller answers it, the primary would too
        _down("failed during a read", exc)
    with _reading(PRIMARY):
        return read()


def replica_reads(selector: Callable[..., T]) -> Callable[..., T]:
    """A selector whose reads may all go to the replica: `replica_read` around each call."""

    @functools.wraps(selector)
    def read(*args: Any, **kwargs: Any) -> T:
        return replica_read(lambda: selector(*args, **kwargs))

    return read
