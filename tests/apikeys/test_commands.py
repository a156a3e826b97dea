import os
import subprocess
import sys
from datetime import timedelta
from io import StringIO

import pytest
from django.conf import settings as django_settings
from django.core.management import CommandError, call_command
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from apikeys import keyformat
from apikeys.models import ApiKey
from apikeys.services import apikey_create, apikey_revoke
from tests.factories import ApiKeyFactory

pytestmark = pytest.mark.django_db


def run(*args: str) -> list[str]:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue().splitlines()


def key_lines(lines: list[str]) -> list[str]:
    return [line for line in lines if keyformat.looks_like_key(line)]


def me(raw: str):
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=raw)
    return client.get("/api/keys/me")


def test_create_api_key_prints_a_working_key_once_on_its_own_line():
    lines = run("create_api_key", "web-frontend")
    [raw] = key_lines(lines)
    assert sum(raw in line for line in lines) == 1
    key = ApiKey.objects.get()
    assert key.name == "web-frontend"
    assert key.prefix == keyformat.parse(raw).prefix
    assert key.scopes == ["write", "read"]
    assert key.rate_limit == django_settings.API_KEY_DEFAULT_RATE_LIMIT == 600
    assert key.expires_at is None
    assert any(key.prefix in line and "600 requests/minute" in line for line in lines)
    response = me(raw)
    assert response.status_code == 200
    assert response.json()["name"] == "web-frontend"


def test_create_api_key_takes_rate_limit_scopes_and_expiry():
    before = timezone.now()
    lines = run(
        "create_api_key", "ci", "--rate-limit", "5", "--scopes", "read", "--expires-in", "7"
    )
    [raw] = key_lines(lines)
    key = ApiKey.objects.get()
    assert (key.rate_limit, key.scopes) == (5, ["read"])
    assert before + timedelta(days=7) <= key.expires_at <= timezone.now() + timedelta(days=7)
    assert me(raw).json()["rate_limit"] == 5


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--scopes", "root"], "--scopes"),
        (["--scopes", ","], "--scopes"),
        (["--rate-limit", "0"], "--rate-limit"),
        (["--expires-in", "0"], "--expires-in"),
    ],
)
def test_create_api_key_refuses_bad_options_and_creates_nothing(args, message):
    with pytest.raises(CommandError, match=message):
        run("create_api_key", "x", *args)
    assert not ApiKey.objects.exists()


def test_create_api_key_refuses_a_blank_name():
    with pytest.raises(CommandError, match="name"):
        run("create_api_key", "   ")
    assert not ApiKey.objects.exists()


def test_list_api_keys_shows_status_and_never_a_secret():
    active, active_raw = apikey_create(name="active-one", scopes=["read"], rate_limit=9)
    revoked = ApiKeyFactory(name="revoked-one")
    apikey_revoke(key=revoked)
    expired = ApiKeyFactory(name="expired-one", expires_at=timezone.now() - timedelta(days=1))
    me(active_raw)  # stamps last used
    lines = run("list_api_keys")
    assert lines[0].split() == [
        "id", "name", "prefix", "scopes", "namespaces", "rate/min", "created", "last", "used",
        "status",
    ]  # fmt: skip
    rows = {line.split()[1]: line.split() for line in lines[1:]}
    assert rows["active-one"][0] == str(active.pk)
    assert rows["active-one"][2:6] == [active.prefix, "read", "all", "9"]
    assert rows["active-one"][-1] == "active"
    assert rows["active-one"][-3] != "-"  # last used
    assert rows["revoked-one"][-1] == "revoked"
    assert rows["expired-one"][-1] == "expired"
    assert rows["expired-one"][-2] == "-"  # never used
    output = "\n".join(lines)
    for key in (active, revoked, expired):
        key.refresh_from_db()
        assert key.key_hash not in output
    assert active_raw not in output and revoked.raw_key not in output


def test_list_api_keys_with_no_keys_says_how_to_create_one():
    assert "create_api_key" in run("list_api_keys")[0]


@pytest.mark.parametrize("by", ["id", "prefix"])
def test_revoke_api_key_by_id_or_prefix_stops_the_key(by):
    key = ApiKeyFactory()
    assert me(key.raw_key).status_code == 200
    lines = run("revoke_api_key", str(key.pk) if by == "id" else key.prefix)
    assert lines == [f"Revoked API key {key.pk} {key.name!r} ({key.prefix})."]
    key.refresh_from_db()
    assert key.revoked_at is not None
    assert me(key.raw_key).json()["type"].endswith("api-key-revoked")


def test_revoking_twice_says_so_and_keeps_the_first_time():
    key = ApiKeyFactory()
    run("revoke_api_key", key.prefix)
    key.refresh_from_db()
    first = key.revoked_at
    assert "already revoked" in run("revoke_api_key", key.prefix)[0]
    key.refresh_from_db()
    assert key.revoked_at == first


def test_revoke_api_key_finds_an_all_digit_prefix():
    key = ApiKeyFactory()
    ApiKey.objects.filter(pk=key.pk).update(prefix="12345678")
    other = ApiKeyFactory()
    run("revoke_api_key", "12345678")
    key.refresh_from_db()
    other.refresh_from_db()
    assert key.revoked_at is not None and other.revoked_at is None


def test_revoke_api_key_with_an_unknown_key_is_an_error():
    ApiKeyFactory()
    with pytest.raises(CommandError, match="No API key with id or prefix 'nosuchky'"):
        run("revoke_api_key", "nosuchky")
    with pytest.raises(CommandError, match="No API key"):
        run("revoke_api_key", "999999")
    assert not ApiKey.objects.filter(revoked_at__isnull=False).exists()


def test_revoke_api_key_exits_non_zero_for_an_unknown_key():
    db = connection.settings_dict
    env = {
        **os.environ,
        "DATABASE_URL": f"postgresql://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "DJANGO_DEBUG": "true",
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "revoke_api_key", "nosuchky"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=django_settings.BASE_DIR,
    )
    assert result.returncode == 1
    assert "No API key with id or prefix 'nosuchky'" in result.stderr


def test_ensure_demo_api_key_creates_one_demo_key_when_there_is_none():
    lines = run("ensure_demo_api_key")
    [raw] = key_lines(lines)
    key = ApiKey.objects.get()
    assert key.name == "demo"
    assert any(line.startswith("Try: curl") and f"X-API-Key: {raw}" in line for line in lines)
    assert (
        "Grafana: add a Prometheus data source with URL http://127.0.0.1:8000 and header "
        f"X-API-Key: {raw}"
    ) in lines
    assert me(raw).status_code == 200


def test_ensure_demo_api_key_creates_nothing_when_a_key_exists():
    ApiKeyFactory(name="mine")
    lines = run("ensure_demo_api_key")
    assert len(lines) == 1
    assert "already exists" in lines[0] and "create_api_key" in lines[0]
    assert key_lines(lines) == []
    assert list(ApiKey.objects.values_list("name", flat=True)) == ["mine"]


def test_ensure_demo_api_key_run_twice_creates_one_key():
    run("ensure_demo_api_key")
    run("ensure_demo_api_key")
    assert ApiKey.objects.count() == 1
