"""HTTPS by default: the settings, the refusal of plain-HTTP API calls, the redirect of pages."""

import json
import os
import subprocess
import sys

import pytest

from tests.security.conftest import HTTPS, ROOT, production_env

pytestmark = pytest.mark.django_db


def _django(code: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(  # noqa: S603 - our own interpreter
        [sys.executable, "-c", f"import django; django.setup(); {code}"],
        env=production_env(**env),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_check_deploy_reports_no_issues_under_production_defaults():
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        env=production_env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout


def test_production_defaults_are_https_with_hsts_and_secure_cookies():
    result = _django(
        "from django.conf import settings as s; import json; print(json.dumps(["
        "s.SECURE_SSL_REDIRECT, s.SECURE_HSTS_SECONDS, s.SECURE_HSTS_INCLUDE_SUBDOMAINS,"
        "s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, hasattr(s, 'SECURE_PROXY_SSL_HEADER') and "
        "s.SECURE_PROXY_SSL_HEADER, s.CORS_ALLOWED_ORIGINS, s.AUTH_FAILURE_RATE,"
        "s.TRUSTED_PROXY_COUNT]))"
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [True, 31536000, True, True, True, None, [], "100/m", 0]


def test_the_proxy_header_setting_names_a_header():
    result = _django(
        "from django.conf import settings as s; print(s.SECURE_PROXY_SSL_HEADER)",
        SECURE_PROXY_SSL_HEADER="X-Forwarded-Proto",
    )
    assert result.stdout.strip() == "('HTTP_X_FORWARDED_PROTO', 'https')"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SECURE_PROXY_SSL_HEADER", "X-Forwarded-Proto: https"),
        ("AUTH_FAILURE_RATE", "100"),
        ("AUTH_FAILURE_RATE", "0/m"),
        ("TRUSTED_PROXY_COUNT", "-1"),
        ("CORS_ALLOWED_ORIGINS", "app.example.com"),
        ("SECURE_SSL_REDIRECT", "maybe"),
    ],
)
def test_bad_security_settings_stop_start_up_naming_the_variable(name, value):
    result = _django("", **{name: value})
    assert result.returncode != 0
    assert name in result.stderr


@pytest.fixture
def https_on(settings):
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_HSTS_SECONDS = 31536000


def test_api_call_over_plain_http_is_refused_before_any_key_lookup(
    https_on, client_anon, api_key, django_assert_num_queries
):
    _, raw = api_key
    with django_assert_num_queries(0):
        response = client_anon.get("/api/keys/me", HTTP_X_API_KEY=raw)
    assert response.status_code == 403
    assert response["Content-Type"] == "application/problem+json"
    assert response.json()["type"] == "urn:glowing-fiesta:problem:https-required"
    assert "Location" not in response


@pytest.mark.parametrize("path", ["/v1/metrics", "/api/v1/write", "/api/metrics/counter"])
def test_every_api_path_over_plain_http_is_refused(https_on, client_anon, api_key, path):
    _, raw = api_key
    response = client_anon.post(
        path, b"", content_type="application/x-protobuf", HTTP_X_API_KEY=raw
    )
    assert response.status_code == 403
    assert response.json()["type"].endswith(":https-required")


def test_api_call_over_https_is_served(https_on, client_anon, api_key):
    _, raw = api_key
    response = client_anon.get("/api/keys/me", HTTP_X_API_KEY=raw, secure=True)
    assert response.status_code == 200
    assert response["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"


@pytest.mark.parametrize("path", ["/admin/", "/api/docs/", "/api/schema/"])
def test_browser_pages_over_plain_http_redirect_to_https(https_on, client_anon, path):
    response = client_anon.get(path)
    assert response.status_code == 301
    assert response["Location"] == f"https://testserver{path}"


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_probes_answer_over_plain_http(https_on, client_anon, path):
    assert client_anon.get(path).status_code == 200


def test_proxy_header_counts_only_when_configured(https_on, settings, client_anon, api_key):
    _, raw = api_key
    forwarded = {"HTTP_X_API_KEY": raw, "HTTP_X_FORWARDED_PROTO": "https"}
    assert client_anon.get("/api/keys/me", **forwarded).status_code == 403
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    assert client_anon.get("/api/keys/me", **forwarded).status_code == 200
    forwarded["HTTP_X_FORWARDED_PROTO"] = "http"
    assert client_anon.get("/api/keys/me", **forwarded).status_code == 403


def test_make_run_and_make_test_relax_only_the_redirect_and_cookie_flags(capsys):
    from glowing_fiesta import devstack

    env = devstack.plain_http_env({"PATH": os.environ["PATH"]})
    assert {k: v for k, v in env.items() if k != "PATH"} == {
        "SECURE_SSL_REDIRECT": "false",
        "SESSION_COOKIE_SECURE": "false",
        "CSRF_COOKIE_SECURE": "false",
    }
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    assert "plain HTTP" in lines[0]
    # A value the operator set is kept.
    assert devstack.plain_http_env({"SECURE_SSL_REDIRECT": "true"})["SECURE_SSL_REDIRECT"] == "true"


@pytest.mark.server
def test_gunicorn_refuses_plain_http_and_serves_https_behind_the_proxy(gunicorn_server, api_key):
    _, raw = api_key
    response, body = gunicorn_server.request("GET", "/api/keys/me", headers={"X-API-Key": raw})
    assert response.status == 403
    assert json.loads(body)["type"].endswith(":https-required")
    response, body = gunicorn_server.request(
        "GET", "/api/keys/me", headers={"X-API-Key": raw, **HTTPS}
    )
    assert response.status == 200, body
    assert response.getheader("Strict-Transport-Security").startswith("max-age=31536000")
    assert response.getheader("Cache-Control") == "no-store"
    response, _ = gunicorn_server.request("GET", "/admin/login/")
    assert response.status == 301
    assert response.getheader("Location").startswith("https://")
    response, _ = gunicorn_server.request("GET", "/readyz")
    assert response.status == 200


@pytest.mark.server
def test_gunicorn_serves_the_docs_and_their_static_files_itself(gunicorn_server):
    response, body = gunicorn_server.request("GET", "/api/docs/", headers=HTTPS)
    assert response.status == 200
    assert "script-src 'self'" in response.getheader("Content-Security-Policy")
    html = body.decode()
    assets = ["/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js"]
    assert all(asset in html for asset in assets)
    for path, kind in [
        (assets[0], "javascript"),
        ("/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui.css", "css"),
        ("/static/drf_spectacular_sidecar/redoc/bundles/redoc.standalone.js", "javascript"),
        ("/static/admin/css/base.css", "css"),
        ("/static/docs/docs.css", "css"),
    ]:
        response, body = gunicorn_server.request("GET", path, headers=HTTPS)
        assert response.status == 200, path
        assert kind in response.getheader("Content-Type"), path
        assert len(body) > 100, path
    response, _ = gunicorn_server.request("GET", "/api/docs/?script", headers=HTTPS)
    assert response.status == 200
    assert "javascript" in response.getheader("Content-Type")


@pytest.mark.server
def test_make_run_web_server_works_over_plain_http(
    transactional_db, clean_point_tables, api_key, tmp_path
):
    """`make run`'s web server with `make run`'s relaxations: the admin, the docs and their
    static files, and the API, all over http://127.0.0.1 with the production defaults otherwise."""
    import http.client
    import re
    import time

    from django.conf import settings
    from django.contrib.auth.models import User

    from glowing_fiesta import devstack
    from tests.processes import worker_database_url

    _, raw = api_key
    port = devstack.free_port()
    env = devstack.plain_http_env(
        production_env(DATABASE_URL=worker_database_url(), REDIS_URL=settings.REDIS_URL)
    )
    log = (tmp_path / "runserver.log").open("w")
    process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
        devstack.web_command(f"127.0.0.1:{port}"), env=env, cwd=ROOT, stdout=log, stderr=log
    )

    def get(path: str, method: str = "GET", body: str | None = None, **headers: str):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response, response.read()

    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                get("/healthz")
                break
            except OSError:
                assert process.poll() is None and time.monotonic() < deadline, (
                    tmp_path / "runserver.log"
                ).read_text()
                time.sleep(0.2)
        User.objects.create_superuser("admin", "admin@example.com", "right-password")
        response, page = get("/admin/login/")
        assert response.status == 200
        cookie = response.getheader("Set-Cookie", "")
        assert cookie.startswith("csrftoken=") and "Secure" not in cookie
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.decode())[1]
        response, _ = get(
            "/admin/login/?next=/admin/",
            "POST",
            f"csrfmiddlewaretoken={token}&username=admin&password=right-password",
            Cookie=cookie.split(";")[0],
            **{"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert response.status == 302, "the admin login works over plain HTTP"
        assert response.getheader("Location") == "/admin/"
        assert "sessionid=" in response.getheader("Set-Cookie", "")
        response, _ = get("/static/admin/css/base.css")
        assert response.status == 200
        response, _ = get("/api/docs/")
        assert response.status == 200
        response, body = get(
            "/api/metrics/counter",
            "POST",
            json.dumps({"name": "make.run"}),
            **{"X-API-Key": raw, "Content-Type": "application/json"},
        )
        assert response.status == 201, body
        assert response.getheader("Strict-Transport-Security") is None
    finally:
        process.terminate()
        process.wait(10)
        log.close()
