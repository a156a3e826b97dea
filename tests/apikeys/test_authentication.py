import base64
import time
import types
from datetime import timedelta

import pytest
from django.core.cache import caches
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from apikeys import keyformat, selectors
from apikeys.models import ApiKey
from apikeys.selectors import KeyRejected, apikey_get_active
from apikeys.services import apikey_create, apikey_mark_used, apikey_revoke
from tests.apikeys.helpers import with_valid_checksum, wrong_secret
from tests.factories import ApiKeyFactory
from tests.helpers import assert_problem

pytestmark = pytest.mark.django_db

ME = "/api/keys/me"


def get_me(raw: str | None, path: str = ME) -> object:
    client = APIClient()
    if raw is not None:
        client.credentials(HTTP_X_API_KEY=raw)
    return client.get(path)


def test_valid_key_is_served_and_describes_itself():
    key, raw = apikey_create(name="reporting", scopes=["read"], rate_limit=42)
    response = get_me(raw)
    assert response.status_code == 200
    assert response.json() == {
        "name": "reporting",
        "prefix": key.prefix,
        "scopes": ["read"],
        "namespaces": [],
        "rate_limit": 42,
        "expires_at": None,
    }


def test_missing_key_gets_401_missing_with_a_challenge():
    response = get_me(None)
    assert_problem(response, 401, "api-key-missing", "missing")
    assert response["WWW-Authenticate"] == 'ApiKey header="X-API-Key"'


def test_empty_header_counts_as_missing():
    assert_problem(get_me(""), 401, "api-key-missing", "missing")


@pytest.mark.parametrize(
    "raw",
    ["nonsense", "gf_short", "Bearer gf_" + "a" * 44, "gf_" + "a" * 44],
    ids=["garbage", "short", "scheme", "bad-checksum"],
)
def test_malformed_key_gets_401_invalid_without_a_query(raw, django_assert_num_queries):
    with django_assert_num_queries(0):
        response = get_me(raw)
    assert_problem(response, 401, "api-key-invalid", "invalid")


def test_bad_checksum_of_a_real_key_gets_401_invalid_without_a_query(
    api_key, django_assert_num_queries
):
    _, raw = api_key
    tampered = raw[:-1] + ("0" if raw[-1] != "0" else "1")
    with django_assert_num_queries(0):
        response = get_me(tampered)
    assert_problem(response, 401, "api-key-invalid", "invalid")


def test_unknown_prefix_and_wrong_secret_get_the_same_401(api_key):
    _, raw = api_key
    unknown = get_me(with_valid_checksum("gf_" + "Zz9" * 2 + "Q1" + "x" * 30))
    wrong = get_me(wrong_secret(raw))
    assert_problem(unknown, 401, "api-key-invalid", "invalid")
    assert_problem(wrong, 401, "api-key-invalid", "invalid")
    assert unknown.json() == wrong.json()


def test_revoked_key_gets_401_revoked(api_key):
    key, raw = api_key
    assert get_me(raw).status_code == 200  # now cached in Redis
    apikey_revoke(key=key)
    assert_problem(get_me(raw), 401, "api-key-revoked", "revoked")


def test_expired_key_gets_401_expired():
    key = ApiKeyFactory(expires_at=timezone.now() - timedelta(seconds=1))
    assert_problem(get_me(key.raw_key), 401, "api-key-expired", "expired")


def test_key_expires_at_exactly_its_expiry_instant():
    expires_at = timezone.now() + timedelta(days=1)
    key = ApiKeyFactory(expires_at=expires_at)
    assert apikey_get_active(raw_key=key.raw_key, now=expires_at - timedelta(microseconds=1))
    with pytest.raises(KeyRejected) as rejected:
        apikey_get_active(raw_key=key.raw_key, now=expires_at)
    assert rejected.value.reason == "expired"


def test_key_with_a_future_expiry_is_served():
    key = ApiKeyFactory(expires_at=timezone.now() + timedelta(days=1))
    response = get_me(key.raw_key)
    assert response.status_code == 200
    assert response.json()["expires_at"] is not None


def test_revoked_and_expired_key_says_revoked():
    key = ApiKeyFactory(expires_at=timezone.now() - timedelta(days=1), revoked_at=timezone.now())
    assert_problem(get_me(key.raw_key), 401, "api-key-revoked", "revoked")


@pytest.mark.parametrize("param", ["api_key", "key", "apikey", "API_KEY"])
def test_key_in_query_string_is_refused_even_with_a_valid_header(api_key, param):
    _, raw = api_key
    response = get_me(raw, path=f"{ME}?{param}={raw}")
    assert_problem(response, 401, "api-key-in-url", "X-API-Key header")


def test_key_shaped_value_in_any_query_parameter_is_refused(api_key):
    _, raw = api_key
    assert_problem(get_me(None, path=f"{ME}?q={raw}"), 401, "api-key-in-url", "URL")


def test_ordinary_query_parameters_are_fine(api_key):
    _, raw = api_key
    assert get_me(raw, path=f"{ME}?name=gf_requests&from=2024-01-01").status_code == 200


def test_changing_the_pepper_invalidates_every_key(api_key, settings):
    _, raw = api_key
    selectors.apikey_rows_clear()
    settings.API_KEY_PEPPER = "another-pepper"
    assert_problem(get_me(raw), 401, "api-key-invalid", "invalid")


def test_authentication_costs_one_indexed_lookup_then_none_while_cached(api_key):
    _, raw = api_key
    with CaptureQueriesContext(connection) as first:
        assert get_me(raw).status_code == 200
    selects = [q["sql"] for q in first.captured_queries if q["sql"].startswith("SELECT")]
    assert len(selects) == 1
    assert '"api_keys"."prefix" = ' in selects[0]
    # The only other statement is the once-a-minute last_used_at stamp.
    assert len(first.captured_queries) == 2
    with CaptureQueriesContext(connection) as second:
        assert get_me(raw).status_code == 200
    assert second.captured_queries == []


def test_prefix_lookup_uses_the_unique_index(api_key):
    key, _ = api_key
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("EXPLAIN SELECT * FROM api_keys WHERE prefix = %s", [key.prefix])
        plan = " ".join(row[0] for row in cursor.fetchall())
    assert "api_keys_prefix" in plan and "Index" in plan


def test_cached_row_lives_at_most_api_key_cache_seconds(api_key, settings, monkeypatch):
    _, raw = api_key
    started = time.monotonic()
    get_me(raw)
    expires, _row = selectors._rows[keyformat.parse(raw).prefix]
    assert started < expires <= time.monotonic() + settings.API_KEY_CACHE_SECONDS


def test_revocation_elsewhere_applies_once_the_cached_row_expires(api_key, monkeypatch):
    key, raw = api_key
    assert get_me(raw).status_code == 200
    # Another process revoked it in the database; this process still holds its copy.
    ApiKey.objects.filter(pk=key.pk).update(revoked_at=timezone.now())
    assert get_me(raw).status_code == 200
    real = time.monotonic
    later = types.SimpleNamespace(monotonic=lambda: real() + 5.01)  # API_KEY_CACHE_SECONDS on
    monkeypatch.setattr(selectors, "time", later)
    assert_problem(get_me(raw), 401, "api-key-revoked", "revoked")


def test_revocation_here_applies_at_once(api_key):
    key, raw = api_key
    assert get_me(raw).status_code == 200
    apikey_revoke(key=ApiKey.objects.get(pk=key.pk))
    assert_problem(get_me(raw), 401, "api-key-revoked", "revoked")


def test_the_copies_of_unknown_prefixes_are_bounded(monkeypatch):
    monkeypatch.setattr(selectors, "ROWS_MAX", 3)
    for i in range(7):
        selectors.apikey_get_by_prefix(prefix=f"Nope{i:04d}")
        assert len(selectors._rows) <= 3
    assert "Nope0006" in selectors._rows


def test_unknown_prefix_is_remembered_briefly_and_then_forgotten(django_assert_num_queries):
    unknown = with_valid_checksum("gf_Nope0000" + "y" * 30)
    with django_assert_num_queries(1):
        get_me(unknown)
    with django_assert_num_queries(0):
        get_me(unknown)


def test_cache_can_be_turned_off(api_key, settings, django_assert_num_queries):
    settings.API_KEY_CACHE_SECONDS = 0
    _, raw = api_key
    get_me(raw)
    with django_assert_num_queries(1):
        assert get_me(raw).status_code == 200


def test_first_use_stamps_last_used_at(api_key):
    key, raw = api_key
    assert key.last_used_at is None
    before = timezone.now()
    get_me(raw)
    key.refresh_from_db()
    assert key.last_used_at is not None and key.last_used_at >= before


def test_last_used_at_is_written_at_most_once_a_minute(api_key):
    key, _ = api_key
    t0 = timezone.now()
    assert apikey_mark_used(key=key, now=t0) is True
    # The row in hand says it was just used.
    assert apikey_mark_used(key=key, now=t0 + timedelta(seconds=30)) is False
    # A stale copy of the row (e.g. cached elsewhere) is stopped by the Redis marker.
    stale = ApiKey.objects.get(pk=key.pk)
    stale.last_used_at = None
    assert apikey_mark_used(key=stale, now=t0 + timedelta(seconds=30)) is False
    # Without the marker, the conditional UPDATE itself refuses a second write in the minute.
    caches["default"].delete(f"apikey:used:{key.prefix}")
    assert apikey_mark_used(key=stale, now=t0 + timedelta(seconds=59)) is False
    caches["default"].delete(f"apikey:used:{key.prefix}")
    assert apikey_mark_used(key=stale, now=t0 + timedelta(seconds=61)) is True
    key.refresh_from_db()
    assert key.last_used_at == t0 + timedelta(seconds=61)


def test_anonymous_endpoints_still_work_without_a_key(client_anon):
    assert client_anon.get("/healthz").status_code == 200
    schema = client_anon.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert schema.status_code == 200


def test_schema_declares_the_api_key_scheme_on_every_operation(client_anon):
    schema = client_anon.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    assert schema["components"]["securitySchemes"]["ApiKeyAuth"] == {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
    }
    operations = [op for path in schema["paths"].values() for op in path.values()]
    assert operations
    assert all(op["security"] == [{"ApiKeyAuth": []}] for op in operations)
    assert "/api/keys/me" in schema["paths"]


@pytest.mark.parametrize("scheme", ["Bearer", "Token", "bearer", "TOKEN"])
def test_key_in_an_authorization_header_is_accepted(scheme):
    key, raw = apikey_create(name="scraper", scopes=["read"], rate_limit=42)
    response = APIClient().get(ME, HTTP_AUTHORIZATION=f"{scheme} {raw}")
    assert response.status_code == 200, response.content
    assert response.json()["prefix"] == key.prefix


def test_wrong_key_in_an_authorization_header_gets_401_invalid():
    response = APIClient().get(
        ME, HTTP_AUTHORIZATION=f"Bearer {wrong_secret(ApiKeyFactory().raw_key)}"
    )
    assert_problem(response, 401, "api-key-invalid", "invalid")


def test_other_authorization_schemes_count_as_missing():
    _, raw = apikey_create(name="basic", scopes=["read"])
    response = APIClient().get(ME, HTTP_AUTHORIZATION=f"Digest {raw}")
    assert_problem(response, 401, "api-key-missing", "missing")
    # Basic carries the key as the password of base64 "user:password", not bare.
    response = APIClient().get(ME, HTTP_AUTHORIZATION=f"Basic {raw}")
    assert_problem(response, 401, "api-key-missing", "missing")


def test_basic_authorization_takes_the_key_as_its_password():
    key, raw = apikey_create(name="grafana", scopes=["read"])
    basic = base64.b64encode(f"grafana:{raw}".encode()).decode()
    response = APIClient().get(ME, HTTP_AUTHORIZATION=f"Basic {basic}")
    assert response.status_code == 200
    assert response.json()["prefix"] == key.prefix
    # Never the key itself (one ending in "x" made `raw[:-1] + "x"` the right key).
    wrong = base64.b64encode(f"grafana:{wrong_secret(raw)}".encode()).decode()
    response = APIClient().get(ME, HTTP_AUTHORIZATION=f"basic {wrong}")
    assert response.status_code == 401


def test_x_api_key_wins_over_authorization():
    key, raw = apikey_create(name="both", scopes=["read"])
    response = APIClient().get(ME, HTTP_X_API_KEY=raw, HTTP_AUTHORIZATION="Bearer gf_nonsense")
    assert response.status_code == 200
    assert response.json()["prefix"] == key.prefix
