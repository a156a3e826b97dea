"""The query parameters of the Prometheus HTTP API, read as Prometheus reads them.

Times are Unix seconds (a float) or RFC 3339; durations are seconds (a float) or a Prometheus
duration (`5m`, `1h30m`). Every refusal is a `BadData` naming the parameter, in Prometheus's
words, so that clients show the familiar message.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import datetime

import promql_parser as pp

from .errors import BadData

# Prometheus's own cap on the points a range query returns per series.
MAX_POINTS = 11_000

_DURATION = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")


def time_param(params: Mapping[str, str], name: str, default: float | None = None) -> float:
    """A time in seconds."""
    text = params.get(name)
    if text is None or text == "":
        if default is None:
            raise BadData(f'invalid parameter "{name}": cannot parse "" to a valid timestamp')
        return default
    try:
        value = float(text)
    except ValueError:
        try:
            value = datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
        except ValueError:
            raise BadData(
                f'invalid parameter "{name}": cannot parse "{text[:64]}" to a valid timestamp'
            ) from None
    if not math.isfinite(value):
        raise BadData(
            f'invalid parameter "{name}": cannot parse "{text[:64]}" to a valid timestamp'
        )
    return value


def duration_param(params: Mapping[str, str], name: str) -> float:
    """A duration in seconds."""
    text = params.get(name, "")
    try:
        value = float(text)
    except ValueError:
        if not _DURATION.match(text):
            raise BadData(
                f'invalid parameter "{name}": cannot parse "{text[:64]}" to a valid duration'
            ) from None
        value = pp.parse_duration(text).total_seconds()
    if not math.isfinite(value):
        raise BadData(f'invalid parameter "{name}": cannot parse "{text[:64]}" to a valid duration')
    return value


def query_param(params: Mapping[str, str]) -> str:
    query = params.get("query", "")
    if not query:
        raise BadData('invalid parameter "query": parse error: no expression found in input')
    return query


def range_params(params: Mapping[str, str]) -> tuple[float, float, float]:
    """start, end, step of a range query, checked as Prometheus checks them."""
    start = time_param(params, "start")
    end = time_param(params, "end")
    if end < start:
        raise BadData('invalid parameter "end": end timestamp must not be before start time')
    step = duration_param(params, "step")
    if step <= 0:
        raise BadData(
            'invalid parameter "step": zero or negative query resolution step widths are not '
            "accepted. Try a positive integer"
        )
    if (end - start) / step > MAX_POINTS:
        raise BadData(
            "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the "
            "query resolution (?step=XX)"
        )
    return start, end, step
