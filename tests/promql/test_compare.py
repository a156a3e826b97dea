"""The comparator's rules: how values, labels and series are matched, and how a case is judged."""

from __future__ import annotations

import json
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.promql.compare import (
    Case,
    Endpoint,
    case_compare,
    compare,
    main,
    queries_load,
    results_diff,
    value_equal,
)


def matrix(*series: tuple[dict, list]) -> dict:
    return {
        "resultType": "matrix",
        "result": [{"metric": m, "values": [list(v) for v in values]} for m, values in series],
    }


def vector(*series: tuple[dict, tuple]) -> dict:
    return {"resultType": "vector", "result": [{"metric": m, "value": list(v)} for m, v in series]}


A = {"__name__": "x", "instance": "a", "job": "demo"}
B = {"__name__": "x", "instance": "b", "job": "demo"}


@pytest.mark.parametrize(
    ("expected", "actual"),
    [
        ("NaN", "NaN"),
        ("+Inf", "+Inf"),
        ("-Inf", "-Inf"),
        ("1", "1"),
        ("1", "1.0"),
        ("1000000000", "1000000999"),  # relative: within 1e-6 of 1e9
        ("0", "0.0000009"),  # absolute, near zero
        ("-2.5", "-2.5000000001"),
        ("1e+06", "1000000"),
    ],
)
def test_values_that_match(expected, actual):
    assert value_equal(expected, actual)


@pytest.mark.parametrize(
    ("expected", "actual"),
    [
        ("NaN", "0"),
        ("0", "NaN"),
        ("NaN", "nan"),  # not finite: the text must be Prometheus's
        ("+Inf", "Inf"),
        ("+Inf", "-Inf"),
        ("+Inf", "1e308"),
        ("1000000000", "1000001001"),
        ("0", "0.0000011"),
        ("1", "-1"),
        ("1", "one"),
    ],
)
def test_values_that_differ(expected, actual):
    assert not value_equal(expected, actual)


def test_label_order_and_series_order_do_not_matter():
    expected = matrix((A, [(60, "1"), (120, "2")]), (B, [(60, "3")]))
    actual = {
        "resultType": "matrix",
        "result": [
            {"metric": {"job": "demo", "instance": "b", "__name__": "x"}, "values": [[60, "3"]]},
            {"metric": dict(reversed(A.items())), "values": [[60.0, "1.0"], [120, "2"]]},
        ],
    }
    assert results_diff(expected, actual) is None


def test_a_changed_value_fails_naming_the_series_and_time():
    expected = matrix((A, [(60, "1"), (120, "2")]), (B, [(60, "3")]))
    actual = matrix((A, [(60, "1"), (120, "2.001")]), (B, [(60, "3")]))
    diff = results_diff(expected, actual)
    assert diff == 'x{instance="a", job="demo"} at 120: value 2.001, expected 2'


def test_nan_and_inf_samples_match_only_themselves():
    expected = vector((A, (60, "NaN")), (B, (60, "+Inf")))
    assert results_diff(expected, vector((A, (60, "NaN")), (B, (60, "+Inf")))) is None
    assert "value 5" in results_diff(expected, vector((A, (60, "5")), (B, (60, "+Inf"))))
    assert "value -Inf" in results_diff(expected, vector((A, (60, "NaN")), (B, (60, "-Inf"))))


def test_a_value_must_be_a_string():
    diff = results_diff(vector((A, (60, "1"))), vector((A, (60, 1))))
    assert "is not a string" in diff


def test_timestamps_must_be_equal_to_the_millisecond():
    expected = matrix((A, [(60.5, "1")]))
    assert results_diff(expected, matrix((A, [(60.5004, "1")]))) is None
    assert "timestamp 60.502" in results_diff(expected, matrix((A, [(60.502, "1")])))


def test_missing_extra_and_duplicate_series_fail():
    expected = matrix((A, [(60, "1")]), (B, [(60, "1")]))
    assert "1 series missing" in results_diff(expected, matrix((A, [(60, "1")])))
    c = {**A, "instance": "c"}
    assert "not expected" in results_diff(
        matrix((A, [(60, "1")])), matrix((A, [(60, "1")]), (c, [(60, "1")]))
    )
    assert "two series" in results_diff(expected, matrix((A, [(60, "1")]), (A, [(60, "1")])))
    # A label more is another series.
    assert "missing" in results_diff(
        expected, matrix(({**A, "x": "1"}, [(60, "1")]), (B, [(60, "1")]))
    )


def test_missing_and_extra_samples_fail():
    expected = matrix((A, [(60, "1"), (120, "2")]))
    assert "1 samples, expected 2" in results_diff(expected, matrix((A, [(60, "1")])))
    longer = matrix((A, [(60, "1"), (120, "2"), (180, "3")]))
    assert "extra at 180" in results_diff(expected, longer)


def test_result_types_scalars_and_strings():
    assert "resultType" in results_diff(matrix(), vector())
    scalar = {"resultType": "scalar", "result": [60, "42"]}
    assert results_diff(scalar, {"resultType": "scalar", "result": [60, "42.0"]}) is None
    assert "value 41" in results_diff(scalar, {"resultType": "scalar", "result": [60, "41"]})
    string = {"resultType": "string", "result": [60, "a"]}
    assert "string" in results_diff(string, {"resultType": "string", "result": [60, "b"]})
    assert results_diff(matrix(), {"resultType": "matrix", "result": None})


def test_order_counts_only_when_asked():
    expected = vector((A, (60, "1")), (B, (60, "2")))
    swapped = vector((B, (60, "2")), (A, (60, "1")))
    assert results_diff(expected, swapped) is None
    assert results_diff(expected, swapped, ordered=True).startswith("order")


Handler = Callable[[str, dict], tuple[int, dict]]


@pytest.fixture
def fake_api() -> Iterator[Callable[[Handler], Endpoint]]:
    """`fake_api(handler)`: an HTTP server answering each form POST with handler(path, form)."""
    servers = []

    def start(handler: Handler) -> Endpoint:
        class Answering(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers["Content-Length"])
                form = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode()))
                form["_auth"] = self.headers.get("X-API-Key", "")
                status, body = handler(self.path, form)
                raw = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *args):
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Answering)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return Endpoint(f"http://127.0.0.1:{server.server_address[1]}")

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def success(data: dict) -> tuple[int, dict]:
    return 200, {"status": "success", "data": data}


def failure(status: int, kind: str, error: str = "no") -> tuple[int, dict]:
    return status, {"status": "error", "errorType": kind, "error": error}


RANGE = {"start": 0, "end": 120, "step": 60}


def test_case_outcomes(fake_api):
    reference = fake_api(
        lambda path, form: (
            failure(400, "bad_data")
            if form["query"] == "bad("
            else success(matrix((A, [(60, form["query"])])))
        )
    )
    echo = fake_api(lambda path, form: success(matrix((A, [(60, form["query"])]))))
    unsupported = fake_api(lambda path, form: failure(422, "execution", "holt_winters"))
    broken = fake_api(lambda path, form: (500, {"oops": True}))
    assert case_compare(echo, reference, Case("1"), **RANGE).status == "pass"
    # The reference is asked its own form; ours, the query.
    changed = case_compare(echo, reference, Case("1", reference="2"), **RANGE)
    assert changed.status == "fail"
    assert "value 1, expected 2" in changed.detail
    outcome = case_compare(unsupported, reference, Case("1"), **RANGE)
    assert (outcome.status, outcome.detail) == (
        "unsupported",
        "query_range: 422 execution: holt_winters",
    )
    assert case_compare(broken, reference, Case("1"), **RANGE).status == "error"
    assert case_compare(echo, reference, Case("bad("), **RANGE).status == "error"


def test_should_fail_cases_need_the_same_refusal(fake_api):
    reference = fake_api(lambda path, form: failure(400, "bad_data", "parse error"))
    same = fake_api(lambda path, form: failure(400, "bad_data", "another message"))
    other = fake_api(lambda path, form: failure(422, "execution"))
    accepting = fake_api(lambda path, form: success(matrix()))
    case = Case("1 +", should_fail=True)
    assert case_compare(same, reference, case, **RANGE).status == "pass"
    assert case_compare(other, reference, case, **RANGE).status == "unsupported"
    assert case_compare(accepting, reference, case, **RANGE).status == "fail"
    assert case_compare(same, accepting, case, **RANGE).status == "error"


def test_instant_queries_are_compared_at_each_time_and_headers_are_sent(fake_api):
    seen = []

    def reference_answer(path, form):
        seen.append((path, form.get("time"), form["_auth"]))
        if path == "/api/v1/query":
            return success(vector((A, (float(form["time"]), "1"))))
        return success(matrix((A, [(60, "1")])))

    def ours_answer(path, form):
        if path == "/api/v1/query" and form["time"] == "90.5":
            return success(vector((A, (90.5, "2"))))
        return reference_answer(path, form)

    reference = fake_api(reference_answer)
    ours = fake_api(ours_answer)
    ours = Endpoint(ours.url, {"X-API-Key": "gf_secret"})
    outcome = case_compare(ours, reference, Case("x"), times=(30, 90.5), **RANGE)
    assert outcome.status == "fail"
    assert outcome.detail.startswith("query at 90.5:")
    assert ("/api/v1/query_range", None, "gf_secret") in seen
    summary = compare(ours, reference, [Case("x"), Case("y")], times=(30,), **RANGE)
    assert summary.counts() == {"pass": 2, "fail": 0, "unsupported": 0, "error": 0}
    assert summary.pass_rate == 1.0
    assert "2 queries: 2 pass" in summary.report()


def test_the_query_list_loads_and_refuses_unknown_keys(tmp_path):
    cases = queries_load()
    assert len(cases) >= 170
    bad = tmp_path / "q.yml"
    bad.write_text("queries:\n  - query: up\n    shouldfail: true\n")
    with pytest.raises(ValueError, match="shouldfail"):
        queries_load(bad)


def test_the_command_line_compares_two_live_apis(fake_api, tmp_path, capsys):
    auths = []

    def ours_answer(path, form):
        auths.append(form["_auth"])
        return success(matrix((A, [(60, "2" if form["query"] == "y" else "1")])))

    ours = fake_api(ours_answer)
    reference = fake_api(lambda path, form: success(matrix((A, [(60, "1")]))))
    queries = tmp_path / "q.yml"
    queries.write_text("queries:\n  - {query: x, family: a}\n  - {query: y, family: b}\n")
    common = ["--ours", ours.url, "--reference", reference.url, "--header", "X-API-Key: gf_k"]
    common += ["--start", "0", "--end", "120", "--time", "60", "--queries", str(queries)]
    assert main(common) == 1
    out = capsys.readouterr().out
    assert "2 queries: 1 pass, 1 fail" in out
    assert "by family: a 1/1, b 0/1" in out
    assert "FAIL y" in out
    assert set(auths) == {"gf_k"}
    assert main([*common, "--family", "a"]) == 0
