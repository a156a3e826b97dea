"""One error shape on every path: what Django or gunicorn answer before a view is problem+json."""

import json

import pytest
from django.test import Client

from tests.security.conftest import HTTPS

pytestmark = pytest.mark.django_db

PROBLEM = "application/problem+json"


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
        ({}, "/healthz?" + "q" * 5000, 414),
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
