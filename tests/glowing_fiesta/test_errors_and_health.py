import pytest
from django.db import connection

from tests.helpers import DOCUMENTED_PATHS

pytestmark = pytest.mark.django_db


def test_healthz_answers_without_auth(client_anon):
    response = client_anon.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert response["X-Request-ID"]


def test_readyz_reports_both_dependencies(client_anon):
    response = client_anon.get("/readyz")
    assert response.status_code == 200
    assert response.json()["checks"] == {"postgresql": "ok", "redis": "ok"}


def test_readyz_is_503_naming_the_database_when_it_is_unreachable(client_anon, monkeypatch):
    params = connection.settings_dict.copy()
    monkeypatch.setitem(connection.settings_dict, "HOST", "127.0.0.1")
    monkeypatch.setitem(connection.settings_dict, "PORT", "1")
    monkeypatch.setitem(connection.settings_dict, "OPTIONS", {})
    connection.close()
    try:
        response = client_anon.get("/readyz")
    finally:
        connection.settings_dict.update(params)
    assert response.status_code == 503
    assert response["Content-Type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == 503
    assert "postgresql" in body["detail"]
    assert "redis" not in body["detail"]


def test_unknown_url_is_a_problem_document(client_anon):
    response = client_anon.get("/no/such/thing")
    assert response.status_code == 404
    assert response["Content-Type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == 404
    assert body["type"].endswith(":not-found")
    assert {"type", "title", "status", "detail"} <= body.keys()


def test_openapi_schema_and_docs_are_served(client_anon):
    schema = client_anon.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert schema.status_code == 200
    assert client_anon.get("/api/docs/").status_code == 200


def test_wrong_method_is_a_405_problem_document(api_client):
    response = api_client.put("/api/metrics/batch", {}, format="json")
    assert response.status_code == 405
    assert response["Content-Type"] == "application/problem+json"
    assert response.json()["type"].endswith(":method-not-allowed")


def test_an_unexpected_failure_is_a_500_problem_document_and_is_logged(
    api_client, monkeypatch, caplog
):
    def explode(**_):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr("metrics.views.ingest.points_ingest", explode)
    api_client.raise_request_exception = False
    response = api_client.post("/api/metrics/counter", {"name": "c"}, format="json")
    assert response.status_code == 500
    assert response["Content-Type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == 500
    assert "disk on fire" not in body["detail"]
    assert any("disk on fire" in (r.exc_text or str(r.exc_info)) for r in caplog.records)


def test_openapi_schema_is_valid_and_lists_every_endpoint_with_the_key_scheme(tmp_path):
    import yaml
    from django.core.management import call_command

    out = tmp_path / "schema.yaml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(out))
    schema = yaml.safe_load(out.read_text())
    assert set(schema["paths"]) >= DOCUMENTED_PATHS
    schemes = schema["components"]["securitySchemes"]
    assert any(s.get("in") == "header" and s.get("name") == "X-API-Key" for s in schemes.values())
    for path, operations in schema["paths"].items():
        for operation in operations.values():
            assert operation.get("security"), path


@pytest.fixture
def database_unreachable(monkeypatch):
    """Django's connection points at a closed port until teardown, as in a database outage."""
    params = connection.settings_dict.copy()
    monkeypatch.setitem(connection.settings_dict, "HOST", "127.0.0.1")
    monkeypatch.setitem(connection.settings_dict, "PORT", "1")
    monkeypatch.setitem(connection.settings_dict, "OPTIONS", {})
    connection.close()
    yield
    connection.settings_dict.update(params)
    connection.close()


@pytest.mark.django_db(transaction=True)
def test_a_write_during_a_database_outage_is_503_with_retry_after(api_client, request):
    request.getfixturevalue("database_unreachable")
    response = api_client.post("/api/metrics/counter", {"name": "c"}, format="json")
    assert response.status_code == 503, response.content
    assert response["Content-Type"] == "application/problem+json"
    assert response.json()["type"].endswith(":database-unavailable")
    assert response["Retry-After"] == "2"
    # The liveness probe never touches the database.
    assert api_client.get("/healthz").status_code == 200


@pytest.mark.django_db(transaction=True)
def test_a_write_behind_a_table_lock_is_503_within_the_lock_timeout(
    api_client, settings, clean_point_tables
):
    import time

    import psycopg

    from tests.processes import worker_database_url

    assert api_client.post("/api/metrics/counter", {"name": "c"}, format="json").status_code == 201
    with psycopg.connect(worker_database_url()) as other:
        other.execute("LOCK TABLE metric_points IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        response = api_client.post("/api/metrics/counter", {"name": "c"}, format="json")
        waited = time.monotonic() - started
        other.rollback()
    assert response.status_code == 503, response.content
    assert response["Content-Type"] == "application/problem+json"
    assert "lock" in response.json()["detail"]
    assert response["Retry-After"] == "2"
    # DB_LOCK_TIMEOUT_MS (1 s), not the 5 s statement timeout.
    assert settings.DB_LOCK_TIMEOUT_MS / 1000 <= waited < settings.DB_STATEMENT_TIMEOUT_MS / 1000
