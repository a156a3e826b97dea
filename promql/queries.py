"""An instant or range query, from its text to its value: parse, evaluate over the store.

Every statement of a query runs read-only under the statement timeout PROMQL_TIMEOUT (its round
trips each an implicit transaction that carries those settings: promql/storage.py,
query_settings), and the evaluator stops at the same deadline: a query never holds a connection
past its timeout.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import promql_parser as pp
import psycopg.errors
from django.conf import settings
from django.db import OperationalError, transaction

from glowing_fiesta.db import replica

from . import storage
from .errors import BadData, PromQLError, QueryTimeout
from .evaluator import Evaluator, selector_matchers, vector_selectors
from .selectors import DatabaseSource
from .values import Value


def query_parse(text: str) -> Any:
    try:
        return pp.parse(text)
    except ValueError as exc:
        raise BadData(f'invalid parameter "query": parse error: {exc}') from None


@replica.replica_reads
def _evaluate(
    node: Any, *, start_ms: int, end_ms: int, step_ms: int, namespaces: Sequence[str]
) -> Value:
    timeout = settings.PROMQL_TIMEOUT_SECONDS
    source = DatabaseSource(namespaces=namespaces, max_series=settings.PROMQL_MAX_SERIES)
    evaluator = Evaluator(
        source,
        start_ms=start_ms,
        end_ms=end_ms,
        step_ms=step_ms,
        lookback_ms=settings.PROMQL_LOOKBACK_DELTA_SECONDS * 1000,
        deadline=time.monotonic() + timeout,
    )
    # Every read is on the connection the query reads from: the replica's when it may answer
    # (glowing_fiesta/db/replica.py), else the primary's.
    connection = replica.read_connection()
    try:
        with contextlib.ExitStack() as stack:
            if connection.in_atomic_block:
                # Inside a caller's transaction (a test's): the settings end with a savepoint.
                stack.enter_context(transaction.atomic(using=connection.alias))
            # Each round trip carries the query's settings (storage.query_settings); the first
            # also the series lookups of every selector that names its metric.
            stack.enter_context(storage.query_settings(timeout_ms=timeout * 1000))
            selectors = []
            for selector in vector_selectors(node):
                try:
                    selectors.append(selector_matchers(selector))
                except PromQLError:
                    continue  # raised again where the evaluator meets it
            storage.run(*source.series_reads(selectors))
            return evaluator.evaluate(node)
    except (OperationalError, psycopg.errors.QueryCanceled) as exc:
        # Raised by Django's cursors wrapped, by the binary reads (promql/storage.py) as is.
        if psycopg.errors.QueryCanceled in (type(exc), type(exc.__cause__)):
            raise QueryTimeout("query timed out in query execution") from None
        raise


def query_instant(
    *, query: str, time_s: float, namespaces: Sequence[str] = ()
) -> tuple[Value, int]:
    node = query_parse(query)
    at = round(time_s * 1000)
    return _evaluate(node, start_ms=at, end_ms=at, step_ms=1000, namespaces=namespaces), at


def query_range(
    *, query: str, start_s: float, end_s: float, step_s: float, namespaces: Sequence[str] = ()
) -> tuple[Value, np.ndarray]:
    node = query_parse(query)
    start, end, step = round(start_s * 1000), round(end_s * 1000), max(1, round(step_s * 1000))
    value = _evaluate(node, start_ms=start, end_ms=end, step_ms=step, namespaces=namespaces)
    return value, np.arange(start, end + 1, step, dtype=np.int64)
