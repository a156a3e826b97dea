"""Reads that tell a client what exists: metrics, their series (tag sets) and tag values.

Lists are paged by keyset, never by offset: metrics in name order after the cursor's name,
series in id order after the cursor's id. A page is one index range scan however deep it is,
and rows created while a client pages through are never returned twice nor make it skip one
that existed throughout.

`last_point_at` is read, not kept: it is the start of the latest minute rollup bucket of a
series (of any of a metric's series), which is when its last point's minute began. The write
path pays nothing for it. It is found through the rollups' (series_id, bucket) primary keys in
two probes per series: the latest hour in `metric_rollup_hour` (one table, one backward index
step), then the latest minute within that hour in `metric_rollup_minute`, whose day partitions
outside that hour are pruned at run time. Where the minute rollups of that hour have expired
(retention keeps minutes RETENTION_DAYS, hours longer) the hour's start is given.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from glowing_fiesta.db import replica

from .models import Metric

LIMIT_DEFAULT = 100
LIMIT_MAX = 1000
# Values listed per tag key by `tags_list`: enough to build a filter menu; a key with more
# (an id, a URL) is flagged as truncated instead of sending them all.
TAG_VALUES_MAX = 100


class InvalidCursor(ValueError):
    """The cursor was not made by this service (or was altered)."""


def cursor_encode(value: str | int) -> str:
    """An opaque, URL-safe cursor holding the last row's sort key."""
    raw = json.dumps([value], separators=(",", ":"), ensure_ascii=False).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def cursor_decode(cursor: str, kind: type) -> Any:
    """The sort key in `cursor`, which must be of type `kind`; InvalidCursor otherwise."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        (value,) = json.loads(raw.decode())
    except (binascii.Error, UnicodeDecodeError, ValueError, TypeError):
        raise InvalidCursor("is not a cursor returned by this endpoint") from None
    if type(value) is not kind:
        raise InvalidCursor("is not a cursor returned by this endpoint")
    return value


@dataclass(frozen=True)
class MetricSummary:
    id: int
    name: str
    type: str
    created_at: datetime
    series: int
    last_point_at: datetime | None


@dataclass(frozen=True)
class SeriesSummary:
    id: int
    tags: dict[str, str]
    last_point_at: datetime | None


T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of rows and the cursor of the next one (None on the last page)."""

    results: list[T]
    next_cursor: str | None


# The latest minute bucket of series `s`: two primary-key probes (see the module docstring).
_LAST_POINT = """
    (SELECT coalesce(
        (SELECT max(mi.bucket) FROM metric_rollup_minute mi
         WHERE mi.series_id = s.id AND mi.bucket >= h.bucket
           AND mi.bucket < h.bucket + interval '1 hour'),
        -- A compacted day keeps the offset of its hour's last point (metrics 0014).
        (SELECT c.hour + (c.last_us / 60000000) * interval '1 minute'
         FROM metric_points_compact c WHERE c.series_id = s.id AND c.hour = h.bucket),
        h.bucket)
     FROM (SELECT max(bucket) AS bucket FROM metric_rollup_hour WHERE series_id = s.id) h)
"""


def last_point_sql(metric_table: str) -> str:
    """SQL for the latest minute bucket of any series of the metric row `metric_table`."""
    # The alias is a constant of the caller (this module, the admin), never input.
    return f"(SELECT max({_LAST_POINT}) FROM series s WHERE s.metric_id = {metric_table}.id)"  # noqa: S608


def series_count_sql(metric_table: str) -> str:
    """SQL for the number of series of the metric row `metric_table` (one index range)."""
    return f"(SELECT count(*) FROM series s WHERE s.metric_id = {metric_table}.id)"  # noqa: S608


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _page_rows(sql: str, params: list[Any], limit: int) -> tuple[list[tuple], bool]:
    """The first `limit` rows of `sql` (whose last parameter is its LIMIT) and whether more
    follow: it is asked for one row more than a page."""
    with replica.read_connection().cursor() as cursor:
        cursor.execute(sql, [*params, limit + 1])
        rows = cursor.fetchall()
    return rows[:limit], len(rows) > limit


@replica.replica_reads
def metrics_list(
    *,
    search: str | None = None,
    prefix: str | None = None,
    metric_type: str | None = None,
    after: str | None = None,
    limit: int = LIMIT_DEFAULT,
    namespaces: Sequence[str] = (),
) -> Page[MetricSummary]:
    """Metrics in name order after the name `after`, filtered, with series counts.

    `search` matches a case-insensitive substring of the name, `prefix` its start (case
    sensitive, as names are); `namespaces` (a key's name prefixes; none: every metric) bound
    the whole list, counts and cursors included. The walk is over the unique index on name, so a deep page costs
    what the first does.
    """
    where = ["TRUE"]
    params: list[Any] = []
    if after is not None:
        where.append("m.name > %s")
        params.append(after)
    if prefix:
        where.append("starts_with(m.name, %s)")
        params.append(prefix)
    if namespaces:
        where.append("m.name LIKE ANY(%s)")
        params.append([_like_escape(namespace) + "%" for namespace in namespaces])
    if search:
        where.append("m.name ILIKE %s")
        params.append(f"%{_like_escape(search)}%")
    if metric_type:
        where.append("m.type = %s")
        params.append(metric_type)
    sql = f"""
        SELECT m.id, m.name, m.type, m.created_at, {series_count_sql("m")}, {last_point_sql("m")}
        FROM metrics m
        WHERE {" AND ".join(where)}
        ORDER BY m.name
        LIMIT %s
    """  # noqa: S608 - conditions are constants of this module, values are parameters
    rows, more = _page_rows(sql, params, limit)
    results = [MetricSummary(*row) for row in rows]
    return Page(results, cursor_encode(results[-1].name) if more else None)


@replica.replica_reads
def series_list(
    *,
    metric: Metric,
    tags: Sequence[tuple[str, str]] = (),
    after: int | None = None,
    limit: int = LIMIT_DEFAULT,
) -> Page[SeriesSummary]:
    """The metric's series in creation (id) order after id `after`, each matching all `tags`."""
    where = ["s.metric_id = %s"]
    params: list[Any] = [metric.pk]
    if after is not None:
        where.append("s.id > %s")
        params.append(after)
    if tags:
        # One containment per pair, as the query's tag filter: a key given twice matches none.
        where.append("s.tags @> ALL(%s::jsonb[])")
        params.append([json.dumps({k: v}, ensure_ascii=False) for k, v in tags])
    sql = f"""
        SELECT s.id, s.tags, {_LAST_POINT}
        FROM series s
        WHERE {" AND ".join(where)}
        ORDER BY s.id
        LIMIT %s
    """  # noqa: S608 - conditions are constants of this module, values are parameters
    rows, more = _page_rows(sql, params, limit)
    results = [SeriesSummary(id=row[0], tags=_tags(row[1]), last_point_at=row[2]) for row in rows]
    return Page(results, cursor_encode(results[-1].id) if more else None)


def _tags(raw: Any) -> dict[str, str]:
    return json.loads(raw) if isinstance(raw, str) else raw


@dataclass(frozen=True)
class TagValues:
    """Each tag key of a metric with its first TAG_VALUES_MAX values in order; `truncated`
    names the keys that have more."""

    keys: dict[str, list[str]]
    truncated: list[str]


@replica.replica_reads
def tags_list(*, metric: Metric) -> TagValues:
    """Every tag key used by the metric's series and, per key, its values (capped)."""
    sql = """
        SELECT key, value FROM (
            SELECT key, value, row_number() OVER (PARTITION BY key ORDER BY value) AS n
            FROM (SELECT DISTINCT t.key, t.value
                  FROM series s CROSS JOIN LATERAL jsonb_each_text(s.tags) AS t
                  WHERE s.metric_id = %s) AS pairs
        ) AS ranked
        WHERE n <= %s
        ORDER BY key, value
    """
    with replica.read_connection().cursor() as cursor:
        cursor.execute(sql, [metric.pk, TAG_VALUES_MAX + 1])
        rows = cursor.fetchall()
    keys: dict[str, list[str]] = {}
    for key, value in rows:
        keys.setdefault(key, []).append(value)
    truncated = [key for key, values in keys.items() if len(values) > TAG_VALUES_MAX]
    for key in truncated:
        del keys[key][TAG_VALUES_MAX:]
    return TagValues(keys=keys, truncated=truncated)
