"""Security headers on every response, a CSP on every page, no caching of API answers, CORS."""

import pytest

pytestmark = pytest.mark.django_db

ORIGIN = "https://app.example.com"


@pytest.fixture
def responses(api_client, client_anon, admin_client):
    api_client.post("/api/metrics/counter", {"name": "hdr"}, format="json")
    return {
        "api": api_client.get("/api/metrics/hdr"),
        "api error": client_anon.get("/api/keys/me"),
        "not found": client_anon.get("/nowhere"),
        "probe": client_anon.get("/healthz"),
        "docs": client_anon.get("/api/docs/"),
        "admin login": client_anon.get("/admin/login/"),
        "admin": admin_client.get("/admin/"),
    }


def test_every_response_carries_the_security_headers(responses):
    for name, response in responses.items():
        assert response["X-Content-Type-Options"] == "nosniff", name
        assert response["Referrer-Policy"] == "same-origin", name
        assert response["X-Frame-Options"] == "DENY", name
        assert response["Cross-Origin-Opener-Policy"] == "same-origin", name


def _csp(response) -> dict[str, list[str]]:
    policy = {}
    for part in response["Content-Security-Policy"].split(";"):
        name, *values = part.split()
        policy[name] = values
    return policy


def test_html_pages_have_a_csp_without_inline_script_or_foreign_origins(responses):
    for name in ("docs", "admin login", "admin"):
        response = responses[name]
        assert response["Content-Type"].startswith("text/html"), name
        policy = _csp(response)
        assert policy["script-src"] == ["'self'"], name
        assert policy["style-src"] == ["'self'"], name
        assert policy["default-src"] == ["'self'"], name
        assert policy["frame-ancestors"] == ["'none'"], name
        assert policy["object-src"] == ["'none'"], name


def test_redoc_alone_allows_inline_styles_and_a_blob_worker(client_anon):
    response = client_anon.get("/api/redoc/")
    assert response.status_code == 200
    policy = _csp(response)
    assert policy["script-src"] == ["'self'"]
    assert policy["style-src"] == ["'self'", "'unsafe-inline'"]
    assert policy["worker-src"] == ["blob:"]


def test_docs_pages_load_nothing_from_another_origin(client_anon):
    for path in ("/api/docs/", "/api/redoc/"):
        html = client_anon.get(path).content.decode()
        assert (
            "http://" not in html
            and "https://" not in html
            and "//" not in html.replace("<!DOCTYPE", "")
        ), path
        assert "<script>" not in html and "<style>" not in html, path


def test_api_answers_are_not_stored_by_caches(responses):
    for name in ("api", "api error", "probe"):
        assert responses[name]["Cache-Control"] == "no-store", name


@pytest.fixture
def cors_on(settings):
    settings.CORS_ALLOWED_ORIGINS = [ORIGIN]


def _preflight(client, path: str, origin: str = ORIGIN):
    return client.options(
        path,
        HTTP_ORIGIN=origin,
        HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST",
        HTTP_ACCESS_CONTROL_REQUEST_HEADERS="x-api-key, authorization, content-type, "
        "idempotency-key, prefer",
    )


@pytest.mark.parametrize("path", ["/api/metrics/counter", "/api/metrics/batch", "/api/keys/me"])
def test_preflight_from_a_listed_origin_succeeds_without_a_key(cors_on, client_anon, path):
    response = _preflight(client_anon, path)
    assert response.status_code == 200
    assert response["Access-Control-Allow-Origin"] == ORIGIN
    assert "POST" in response["Access-Control-Allow-Methods"]
    allowed = {h.strip() for h in response["Access-Control-Allow-Headers"].split(",")}
    assert {"x-api-key", "authorization", "content-type", "idempotency-key", "prefer"} <= allowed
    assert "Access-Control-Allow-Credentials" not in response


def test_cross_origin_answers_expose_the_api_headers(cors_on, api_client):
    response = api_client.post(
        "/api/metrics/counter", {"name": "cors"}, format="json", HTTP_ORIGIN=ORIGIN
    )
    assert response.status_code == 201
    assert response["Access-Control-Allow-Origin"] == ORIGIN
    exposed = {h.strip().lower() for h in response["Access-Control-Expose-Headers"].split(",")}
    assert {
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
        "retry-after",
        "location",
        "idempotent-replayed",
    } <= exposed


def test_an_unlisted_origin_gets_no_cors_headers(cors_on, client_anon):
    response = _preflight(client_anon, "/api/metrics/counter", origin="https://evil.example")
    assert "Access-Control-Allow-Origin" not in response


def test_cors_is_off_by_default(client_anon):
    response = _preflight(client_anon, "/api/metrics/counter")
    assert "Access-Control-Allow-Origin" not in response
