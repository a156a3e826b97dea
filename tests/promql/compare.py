"""Compare the PromQL answers of two Prometheus-compatible APIs, query by query.

`compare(ours, reference, cases, start=, end=, step=, times=)` sends every case as
`POST /api/v1/query_range` (form-encoded, as Grafana sends it) and as `POST /api/v1/query` at
each of `times`, to both, and judges the answers:

- the same `resultType`; series matched by their whole label set, in any order (in order only
  for a case marked `ordered`, instant answers of `sort` and `sort_desc`);
- every sample at the same timestamp (to the millisecond) with a value within 1e-6, relative or
  absolute; values that are not finite must be the same string (`"NaN"`, `"+Inf"`, `"-Inf"`),
  so NaN equals NaN;
- a case marked `should_fail` must be refused by both, with the same status and `errorType`.

A case's `reference` (when given) is what the reference is asked instead of `query`: the
service's exact `increase(c[r])` is checked against `sum_over_time(c__increments[r])`.

Each case ends `pass`; `fail` with the first difference; `unsupported` when our side answers 422
`execution` (the service names what it does not evaluate); or `error` (a refusal or a broken
answer where the reference answered, or a reference that did not behave as the case says).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

QUERIES = Path(__file__).with_name("queries.yml")
TOLERANCE = 1e-6
TIMEOUT = 30

Status = Literal["pass", "fail", "unsupported", "error"]


@dataclass(frozen=True)
class Case:
    query: str
    reference: str | None = None
    note: str = ""
    family: str = ""
    should_fail: bool = False
    ordered: bool = False
    # The reference answers with no series at all (a selector of a metric that does not exist).
    empty: bool = False

    @property
    def reference_query(self) -> str:
        return self.reference or self.query


@dataclass(frozen=True)
class Endpoint:
    """A Prometheus-compatible API: its base URL and the headers every request carries."""

    url: str
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Answer:
    status: int
    body: Any  # the decoded JSON, or the raw text when the body is not JSON

    @property
    def ok(self) -> bool:
        return (
            self.status == 200
            and isinstance(self.body, dict)
            and self.body.get("status") == "success"
        )

    @property
    def error_type(self) -> str | None:
        return self.body.get("errorType") if isinstance(self.body, dict) else None

    def describe(self) -> str:
        if isinstance(self.body, dict):
            return f"{self.status} {self.body.get('errorType')}: {self.body.get('error')}"
        return f"{self.status} {str(self.body)[:300]!r}"


@dataclass(frozen=True)
class Outcome:
    case: Case
    status: Status
    detail: str = ""


@dataclass
class Summary:
    outcomes: list[Outcome]

    def counts(self) -> dict[str, int]:
        found = Counter(o.status for o in self.outcomes)
        return {status: found.get(status, 0) for status in ("pass", "fail", "unsupported", "error")}

    @property
    def pass_rate(self) -> float:
        return self.counts()["pass"] / len(self.outcomes) if self.outcomes else 0.0

    def not_passed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status != "pass"]

    def by_family(self) -> dict[str, tuple[int, int]]:
        """(passed, total) of each family of queries."""
        totals: dict[str, list[int]] = {}
        for o in self.outcomes:
            tally = totals.setdefault(o.case.family, [0, 0])
            tally[0] += o.status == "pass"
            tally[1] += 1
        return {family: (passed, total) for family, (passed, total) in sorted(totals.items())}

    def report(self) -> str:
        counts = self.counts()
        lines = [
            f"{len(self.outcomes)} queries: "
            + ", ".join(f"{n} {status}" for status, n in counts.items())
            + f"; pass rate {self.pass_rate:.1%}",
            "by family: "
            + ", ".join(f"{f or '-'} {p}/{t}" for f, (p, t) in self.by_family().items()),
        ]
        lines += [f"{o.status.upper()} {o.case.query}\n    {o.detail}" for o in self.not_passed()]
        return "\n".join(lines)


def queries_load(path: Path = QUERIES) -> list[Case]:
    """The cases of a query list: `queries:` entries of `query` and optional `reference`,
    `note`, `family`, `should_fail`, `ordered`, `empty`."""
    entries = yaml.safe_load(path.read_text())["queries"]
    known = set(Case.__dataclass_fields__)
    cases = []
    for entry in entries:
        unknown = set(entry) - known
        if unknown:
            raise ValueError(f"{entry.get('query')!r}: unknown keys {sorted(unknown)}")
        cases.append(Case(**entry))
    return cases


def request(endpoint: Endpoint, path: str, form: Mapping[str, str | float]) -> Answer:
    """POST a form to `endpoint` and decode the answer, whatever its status."""
    body = urllib.parse.urlencode(form).encode()
    headers = {"Content-Type": "application/x-www-form-urlencoded", **endpoint.headers}
    sent = urllib.request.Request(  # noqa: S310 - a URL the caller chose
        endpoint.url.rstrip("/") + path, data=body, headers=headers, method="POST"
    )
    try:
        with urllib.request.urlopen(sent, timeout=TIMEOUT) as response:  # noqa: S310
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read()
    try:
        return Answer(status, json.loads(raw))
    except ValueError:
        return Answer(status, raw.decode(errors="replace"))


def value_equal(expected: str, actual: str, tolerance: float = TOLERANCE) -> bool:
    """Two sample values as the API renders them (strings): within `tolerance`, relative or
    absolute; values that are not finite must be the same text, so "NaN" equals "NaN"."""
    try:
        a, b = float(expected), float(actual)
    except (TypeError, ValueError):
        return False
    if not (math.isfinite(a) and math.isfinite(b)):
        return isinstance(actual, str) and expected == actual
    difference = abs(a - b)
    return difference <= tolerance or difference <= tolerance * max(abs(a), abs(b))


def _timestamp_ms(raw: Any) -> int | None:
    try:
        return round(float(raw) * 1000)
    except (TypeError, ValueError):
        return None


def _labels_text(metric: Mapping[str, str]) -> str:
    name = metric.get("__name__", "")
    rest = ", ".join(f'{k}="{v}"' for k, v in sorted(metric.items()) if k != "__name__")
    return f"{name}{{{rest}}}"


def _sample_diff(expected: Sequence, actual: Sequence, where: str) -> str | None:
    if not (isinstance(actual, Sequence) and len(actual) == 2):
        return f"{where}: sample {actual!r} is not [time, value]"
    want_t, got_t = _timestamp_ms(expected[0]), _timestamp_ms(actual[0])
    if got_t is None or want_t != got_t:
        return f"{where}: timestamp {actual[0]!r}, expected {expected[0]!r}"
    if not isinstance(actual[1], str):
        return f"{where} at {expected[0]}: value {actual[1]!r} is not a string"
    if not value_equal(expected[1], actual[1]):
        return f"{where} at {expected[0]}: value {actual[1]}, expected {expected[1]}"
    return None


def _series_diff(expected: dict, actual: dict, result_type: str) -> str | None:
    where = _labels_text(expected["metric"])
    if result_type == "vector":
        return _sample_diff(expected["value"], actual.get("value"), where)
    want, got = expected["values"], actual.get("values")
    if not isinstance(got, list):
        return f"{where}: no values list"
    for i, sample in enumerate(want):
        if i >= len(got):
            return f"{where}: {len(got)} samples, expected {len(want)}; none at {sample[0]}"
        diff = _sample_diff(sample, got[i], where)
        if diff:
            return diff
    if len(got) > len(want):
        return f"{where}: {len(got)} samples, expected {len(want)}; extra at {got[len(want)][0]}"
    return None


def _keyed(result: list) -> tuple[dict[frozenset, dict], str | None]:
    keyed: dict[frozenset, dict] = {}
    for series in result:
        if not isinstance(series, dict) or not isinstance(series.get("metric"), dict):
            return keyed, f"series {series!r} has no metric object"
        key = frozenset(series["metric"].items())
        if key in keyed:
            return keyed, f"two series {_labels_text(series['metric'])}"
        keyed[key] = series
    return keyed, None


def results_diff(expected: Any, actual: Any, *, ordered: bool = False) -> str | None:
    """The first difference between two answers' `data` objects, or None when they match."""
    if not isinstance(actual, dict):
        return f"data is {actual!r}, not an object"
    want_type, got_type = expected["resultType"], actual.get("resultType")
    if want_type != got_type:
        return f"resultType {got_type!r}, expected {want_type!r}"
    want, got = expected["result"], actual.get("result")
    if want_type in ("scalar", "string"):
        if want_type == "string":
            return None if got == want else f"string {got!r}, expected {want!r}"
        return _sample_diff(want, got, "scalar")
    if not isinstance(got, list):
        return f"result is {got!r}, not a list"
    want_keyed, _ = _keyed(want)
    got_keyed, broken = _keyed(got)
    if broken:
        return broken
    missing = [k for k in want_keyed if k not in got_keyed]
    extra = [k for k in got_keyed if k not in want_keyed]
    if missing or extra:
        parts = []
        if missing:
            names = sorted(_labels_text(dict(k)) for k in missing)
            parts.append(f"{len(missing)} series missing, e.g. {names[0]}")
        if extra:
            names = sorted(_labels_text(dict(k)) for k in extra)
            parts.append(f"{len(extra)} series not expected, e.g. {names[0]}")
        return f"{len(got)} series, expected {len(want)}: " + "; ".join(parts)
    if ordered:
        want_order = [_labels_text(s["metric"]) for s in want]
        got_order = [_labels_text(s["metric"]) for s in got]
        if want_order != got_order:
            return f"order {got_order}, expected {want_order}"
    for key in sorted(want_keyed, key=lambda k: sorted(k)):
        diff = _series_diff(want_keyed[key], got_keyed[key], want_type)
        if diff:
            return diff
    return None


def _calls(
    case: Case, start: float, end: float, step: float, times: Iterable[float]
) -> list[tuple[str, str, dict, bool]]:
    """(description, path, form without the query, ordered) of every call made for `case`."""
    calls = [
        ("query_range", "/api/v1/query_range", {"start": start, "end": end, "step": step}, False)
    ]
    for when in times:
        calls.append((f"query at {when}", "/api/v1/query", {"time": when}, case.ordered))
    return calls


def case_compare(
    ours: Endpoint,
    reference: Endpoint,
    case: Case,
    *,
    start: float,
    end: float,
    step: float,
    times: Iterable[float] = (),
) -> Outcome:
    """Run one case against both APIs and judge it (see the module's docstring)."""
    for what, path, form, ordered in _calls(case, start, end, step, times):
        want = request(reference, path, {"query": case.reference_query, **form})
        got = request(ours, path, {"query": case.query, **form})
        if case.should_fail:
            if want.ok:
                return Outcome(case, "error", f"{what}: the reference accepted it")
            if got.ok:
                return Outcome(case, "fail", f"{what}: answered, expected {want.describe()}")
            if (got.status, got.error_type) != (want.status, want.error_type):
                if got.status == 422 and got.error_type == "execution":
                    return Outcome(case, "unsupported", f"{what}: {got.describe()}")
                return Outcome(
                    case, "fail", f"{what}: {got.describe()}, expected {want.describe()}"
                )
            continue
        if not want.ok:
            return Outcome(case, "error", f"{what}: the reference answered {want.describe()}")
        if got.status == 422 and got.error_type == "execution":
            return Outcome(case, "unsupported", f"{what}: {got.describe()}")
        if not got.ok:
            return Outcome(case, "error", f"{what}: {got.describe()}")
        diff = results_diff(want.body["data"], got.body.get("data"), ordered=ordered)
        if diff:
            return Outcome(case, "fail", f"{what}: {diff}")
    return Outcome(case, "pass")


def compare(
    ours: Endpoint,
    reference: Endpoint,
    cases: Iterable[Case],
    *,
    start: float,
    end: float,
    step: float,
    times: Iterable[float] = (),
) -> Summary:
    """Every case against both APIs: range queries over [start, end] by `step`, and instant
    queries at each of `times`."""
    times = tuple(times)
    return Summary(
        [
            case_compare(ours, reference, case, start=start, end=end, step=step, times=times)
            for case in cases
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Compare a live service with a live reference over the query list; exit 0 when all pass."""
    parser = argparse.ArgumentParser(
        prog="python -m tests.promql.compare", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--ours", required=True, help="base URL of the API under test")
    parser.add_argument("--reference", required=True, help="base URL of the reference Prometheus")
    parser.add_argument(
        "--header",
        action="append",
        default=[],
        help='a header sent to ours, "Name: value" (e.g. "X-API-Key: gf_..."); repeatable',
    )
    parser.add_argument("--start", type=float, required=True, help="Unix seconds")
    parser.add_argument("--end", type=float, required=True, help="Unix seconds")
    parser.add_argument("--step", type=float, default=60.0, help="seconds (default 60)")
    parser.add_argument(
        "--time", type=float, action="append", default=[], help="an instant query time; repeatable"
    )
    parser.add_argument("--queries", type=Path, default=QUERIES)
    parser.add_argument("--family", action="append", default=[], help="only these families")
    args = parser.parse_args(argv)
    headers = dict(h.split(":", 1) for h in args.header)
    ours = Endpoint(args.ours, {k.strip(): v.strip() for k, v in headers.items()})
    cases = [c for c in queries_load(args.queries) if not args.family or c.family in args.family]
    summary = compare(
        ours,
        Endpoint(args.reference),
        cases,
        start=args.start,
        end=args.end,
        step=args.step,
        times=args.time,
    )
    print(summary.report())
    return 0 if summary.pass_rate == 1.0 else 1


if __name__ == "__main__":
    sys.exit(main())
