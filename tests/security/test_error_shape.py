"""One error shape on every path: what Django or gunicorn answer before a view is problem+json."""

import json
import socket

import pytest
from django.test import Client

from tests.helpers import gunicorn_conf_value, longest_query_target
from tests.security.conftest import HTTPS

pytestmark = pytest.mark.django_db

PROBLEM = "application/problem+json"
LIMIT_REQUEST_LINE = gunicorn_conf_value("limit_request_line")


def _problem(response, status: int, slug: str) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"] == PROBLEM
    body = response.json()
    assert body["type"] == f"urn:glowing-fiesta:problem:{slug}"
    assert body["status"] == status
    assert "{" not in body["title"]
    return body


@pytest.mark.parametrize("method", ["post", "put", "delete", "patch"])
@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_wrong_method_on_a_probe_is_a_405_problem_not_a_csrf_page(client_anon, method, path):
    response = getattr(client_anon, method)(path)
    _problem(response, 405, "method-not-allowed")
    assert response["Allow"] == "GET, HEAD"


def test_head_on_a_probe_is_served(client_anon):
    assert client_anon.head("/healthz").status_code == 200


def test_csrf_failure_is_a_problem_document():
    client = Client(enforce_csrf_checks=True)
    response = client.post("/admin/login/", {"username": "a", "password": "b"})
    body = _problem(response, 403, "csrf-failed")
    assert "CSRF" in body["detail"]


def test_host_not_in_allowed_hosts_is_a_400_problem(client_anon):
    response = client_anon.get("/healthz", HTTP_HOST="evil.example.com")
    _problem(response, 400, "host-not-allowed")


def test_405_from_the_schema_view_is_json_not_yaml(client_anon):
    response = client_anon.post("/api/schema/")
    body = _problem(response, 405, "method-not-allowed")
    assert body["title"] == "Method not allowed"
    assert json.loads(response.content) == body


def test_405_and_415_titles_have_no_placeholders(api_client):
    _problem(api_client.put("/api/metrics/batch"), 405, "method-not-allowed")
    response = api_client.post("/api/metrics/counter", "name=x", content_type="text/plain")
    body = _problem(response, 415, "unsupported-media-type")
    assert body["title"] == "Unsupported media type"


def test_query_string_and_body_errors_share_one_problem_type(api_client):
    api_client.post("/api/metrics/counter", {"name": "shape"}, format="json")
    query = api_client.get("/api/metrics/shape?interval=fortnight")
    body = api_client.post("/api/metrics/counter", {"name": "shape", "value": "x"}, format="json")
    assert _problem(query, 400, "invalid-input")["title"] == "Invalid input"
    assert _problem(body, 400, "invalid-input")["title"] == "Invalid input"


@pytest.mark.server
def test_gunicorn_refusals_are_problem_documents(gunicorn_server):
    cases = [
        ({"X-Long": "x" * 9000}, "/healthz", 431),
        ({f"X-H{i}": "1" for i in range(60)}, "/healthz", 431),
        ({}, "/healthz?" + "q" * 9000, 414),
    ]
    for headers, path, status in cases:
        response, body = gunicorn_server.request("GET", path, headers={**HTTPS, **headers})
        assert response.status == status, body
        assert response.getheader("Content-Type") == PROBLEM
        problem = json.loads(body)
        assert problem["status"] == status
        assert problem["type"].startswith("urn:glowing-fiesta:problem:")
    response, body = gunicorn_server.request("GET", "/healthz", headers={"Host": "evil.example"})
    assert response.status == 400
    assert json.loads(body)["type"].endswith(":host-not-allowed")


def _raw_exchange(server, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """`raw` sent as is (http.client refuses what these tests send), the answer read to EOF."""
    with socket.create_connection((server.host, server.port), timeout=30) as sock:
        sock.sendall(raw)
        received = bytearray()
        while data := sock.recv(65536):
            received += data
    head, _, body = bytes(received).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def _gunicorn_problem(answer: tuple[int, dict[str, str], bytes], status: int) -> dict:
    code, headers, body = answer
    assert code == status, answer
    assert headers["content-type"] == PROBLEM
    problem = json.loads(body)
    assert problem["status"] == status
    assert problem["type"].startswith("urn:glowing-fiesta:problem:")
    return problem


@pytest.mark.server
def test_a_request_line_at_the_limit_is_served_and_one_byte_longer_is_a_414_problem(
    gunicorn_server,
):
    def line_of(length: int) -> bytes:
        start, end = "GET /healthz?q=", " HTTP/1.1"
        line = start + "q" * (length - len(start) - len(end)) + end
        assert len(line) == length
        return f"{line}\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()

    at_limit = _raw_exchange(gunicorn_server, line_of(LIMIT_REQUEST_LINE))
    over = _raw_exchange(gunicorn_server, line_of(LIMIT_REQUEST_LINE + 1))

    assert at_limit[0] == 200, at_limit
    assert _gunicorn_problem(over, 414)["title"] == "URI Too Long"


@pytest.mark.server
def test_the_longest_query_passes_gunicorn(gunicorn_server, api_key):
    _, raw = api_key
    answer = _raw_exchange(
        gunicorn_server,
        f"GET {longest_query_target()} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: {raw}\r\n"
        "X-Forwarded-Proto: https\r\nConnection: close\r\n\r\n".encode(),
    )

    # Read by the service: the metric does not exist.
    assert answer[0] == 404, answer
    assert json.loads(answer[2])["type"].endswith(":metric-not-found")


@pytest.mark.server
@pytest.mark.parametrize("value", [b"\x01", b"k\x7fk", b"a\x00"])
def test_a_control_byte_in_a_header_is_a_400_problem(gunicorn_server, value):
    answer = _raw_exchange(
        gunicorn_server,
        b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nIdempotency-Key: "
        + value
        + b"\r\nConnection: close\r\n\r\n",
    )

    assert _gunicorn_problem(answer, 400)["type"].endswith(":bad-request")


@pytest.mark.server
def test_gunicorn_reads_a_chunked_body_without_content_length(gunicorn_server, api_key):
    import http.client

    _, raw = api_key
    conn = http.client.HTTPConnection(gunicorn_server.host, gunicorn_server.port, timeout=30)
    chunks = [b'{"name": "chunked.', b'counter", "value": 3}']
    conn.request(
        "POST",
        "/api/metrics/counter",
        body=iter(chunks),
        headers={"X-API-Key": raw, "Content-Type": "application/json", **HTTPS},
        encode_chunked=True,
    )
    response = conn.getresponse()
    body = json.loads(response.read())
    conn.close()
    assert response.status == 201, body
    assert body["name"] == "chunked.counter"
    assert body["value"] == 3


@pytest.mark.server
def test_gunicorn_refuses_a_chunked_body_over_the_limit_with_413(gunicorn_server, api_key):
    import http.client

    _, raw = api_key
    conn = http.client.HTTPConnection(gunicorn_server.host, gunicorn_server.port, timeout=30)
    chunk = b" " * 65536
    conn.request(
        "POST",
        "/api/metrics/batch",
        body=iter([chunk] * 9),  # 576 KiB > 512 KiB
        headers={"X-API-Key": raw, "Content-Type": "application/json", **HTTPS},
        encode_chunked=True,
    )
    response = conn.getresponse()
    body = json.loads(response.read())
    conn.close()
    assert response.status == 413
    assert body["type"].endswith(":payload-too-large")


def test_a_chunked_body_the_server_did_not_decode_gets_411(api_client):
    response = api_client.post(
        "/api/metrics/counter",
        b"",
        content_type="application/json",
        HTTP_TRANSFER_ENCODING="chunked",
        CONTENT_LENGTH="",
    )
    _problem(response, 411, "length-required")
