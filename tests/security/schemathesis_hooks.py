"""Schemathesis hooks for the fuzz run: keep generated data inside the rules JSON Schema cannot
state, so that a "valid" request is valid.

Three rules depend on the moment of the request or on data already stored, and no static schema
can express them; every other rule is in the schema itself:

- a point's timestamp must lie within 7 days of now (the schema states the formats);
- a query's `from` must be earlier than `to`, the range at most 10,080 buckets;
- `aggregation=rate` is for counters only, and the fuzzer cannot know a metric's type.

An Idempotency-Key is meant to name one request: a valid key is replaced by a fresh one, since
the fuzzer repeats keys with other bodies (a 422, rightly). And the fuzzer's positive batch
bodies sometimes carry a top-level member the schema forbids (`additionalProperties: false`);
such a member is dropped from a case generated as valid, which is what the schema says it is.

A list's `cursor` is opaque: only one the endpoint returned is valid, so a generated one is dropped
(the first page is asked for instead).

Only values that are valid by the schema are moved (a date-time string, a number); a value that
violates the schema is left alone, so negative cases still reach the service as generated.
"""

from __future__ import annotations

import copy
import re
import time
import uuid
from datetime import UTC, datetime

import schemathesis
from schemathesis import GenerationMode
from schemathesis.core.parameters import ParameterLocation

_DATE_TIME = re.compile(r"\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d:\d\d(\.\d+)?([Zz]|[+-]\d\d:\d\d)")
_UNIX = re.compile(r"-?[0-9]+(\.[0-9]+)?")
_IDEMPOTENCY_KEY = re.compile(
    r"[!-~\xa1-\xac\xae-\xff]([ -~\xa1-\xac\xae-\xff]*[!-~\xa1-\xac\xae-\xff])?"
)


def _recent(seconds_ago: float) -> float:
    return time.time() - seconds_ago


def _iso(seconds_ago: float) -> str:
    return datetime.fromtimestamp(_recent(seconds_ago), UTC).isoformat()


def _point(point: object) -> None:
    if not isinstance(point, dict):
        return
    timestamp = point.get("timestamp")
    if isinstance(timestamp, int | float) and not isinstance(timestamp, bool):
        point["timestamp"] = _recent(60)
    elif isinstance(timestamp, str) and _DATE_TIME.fullmatch(timestamp):
        point["timestamp"] = _iso(60)


def _time_parameter(value: object) -> bool:
    return isinstance(value, str) and bool(_DATE_TIME.fullmatch(value) or _UNIX.fullmatch(value))


@schemathesis.hook
def map_case(context, case):
    body = copy.deepcopy(case.body)
    body_meta = case.meta.components.get(ParameterLocation.BODY) if case.meta else None
    positive = body_meta is not None and body_meta.mode == GenerationMode.POSITIVE
    if isinstance(body, dict):
        points = body.get("points")
        if isinstance(points, list):
            if positive and case.path == "/api/metrics/batch":
                for member in set(body) - {"points"}:
                    del body[member]
            for point in points:
                _point(point)
        else:
            _point(body)
        if body != case.body:
            case.body = body
    # The containers are handed out as copies: changed ones are assigned back.
    headers = dict(case.headers or {})
    for name, key in list(headers.items()):
        valid = isinstance(key, str) and len(key) <= 255 and _IDEMPOTENCY_KEY.fullmatch(key)
        if name.lower() == "idempotency-key" and valid:
            headers[name] = uuid.uuid4().hex
            case.headers = headers
    query = dict(case.query or {})
    if _time_parameter(query.get("from")):
        query["from"] = _iso(7200)
    if _time_parameter(query.get("to")):
        query["to"] = _iso(3600)
    if query.get("aggregation") == "rate":
        del query["aggregation"]
    if "cursor" in query and case.path in ("/api/metrics", "/api/series"):
        del query["cursor"]
    if query != (case.query or {}):
        case.query = query
    return case
