import io
import logging

import pytest
from django.core.management import call_command
from django.db import connection

from apikeys import keyformat
from apikeys.services import apikey_create, apikey_revoke
from glowing_fiesta.logging import JsonFormatter, RequestContextFilter
from tests.apikeys.helpers import secret_of, wrong_secret

pytestmark = pytest.mark.django_db

ME = "/api/keys/me"


def test_database_rows_hold_no_key_or_secret():
    key, raw = apikey_create(name="stored", scopes=["read"], rate_limit=10)
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM api_keys")
        columns = [col.name for col in cursor.description]
        rows = cursor.fetchall()
    dump = repr(rows)
    assert raw not in dump
    assert secret_of(raw) not in dump
    [row] = [dict(zip(columns, r, strict=True)) for r in rows]
    assert row["prefix"] == key.prefix
    assert row["key_hash"] == keyformat.digest(raw)
    assert set(columns) == {
        "id", "name", "prefix", "key_hash", "scopes", "namespaces", "rate_limit",
        "created_at", "last_used_at", "expires_at", "revoked_at",
    }  # fmt: skip


@pytest.fixture
def json_log():
    """Everything logged, rendered by the project's JSON formatter, as production writes it."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RequestContextFilter())
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield stream
    root.removeHandler(handler)
    root.setLevel(old_level)


@pytest.mark.usefixtures("rate_windows_held")
def test_logs_never_contain_a_key(make_api_client, client_anon, json_log, capfd):
    client = make_api_client(rate_limit=2)
    raw = client.raw_key
    assert client.get(ME).status_code == 200
    assert client.get(ME).status_code == 200
    assert client.get(ME).status_code == 429
    assert client_anon.get(ME, HTTP_X_API_KEY=wrong_secret(raw)).status_code == 401
    assert client_anon.get(ME, HTTP_X_API_KEY=raw[:-1] + "!").status_code == 401
    assert client_anon.get(f"{ME}?api_key={raw}").status_code == 401
    client_anon.get(f"/no/such/page?key={raw}")
    apikey_revoke(key=client.api_key)
    assert client.get(ME).status_code == 401
    call_command("list_api_keys")
    logged = json_log.getvalue()
    printed = capfd.readouterr()
    # The test saw the interesting events, so the assertions below are not vacuous.
    for event in ("api key rejected", "api key rate limited", "api key refused in url"):
        assert event in logged
    assert client.api_key.prefix in logged
    assert '"logger": "glowing_fiesta.access"' in logged
    assert "revoked" in printed.out  # list_api_keys printed its table
    for text in (logged, printed.out, printed.err):
        assert raw not in text
        assert secret_of(raw) not in text
        assert wrong_secret(raw) not in text
