import pytest
from django.db import IntegrityError, transaction

from apikeys import keyformat, selectors
from apikeys.models import ApiKey
from apikeys.selectors import apikey_find, apikey_get_by_prefix
from apikeys.services import apikey_create, apikey_update
from tests.factories import ApiKeyFactory

pytestmark = pytest.mark.django_db


def test_create_defaults_to_both_scopes_and_the_default_rate_limit(settings):
    settings.API_KEY_DEFAULT_RATE_LIMIT = 123
    key, raw = apikey_create(name="  spaced  ")
    assert (key.name, key.scopes, key.rate_limit) == ("spaced", ["write", "read"], 123)
    assert keyformat.matches(raw, key.key_hash)


def test_create_drops_duplicate_scopes():
    key, _ = apikey_create(name="x", scopes=["read", "read"])
    assert key.scopes == ["read"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"scopes": ["root"]}, "unknown scope"),
        ({"rate_limit": 0}, "rate limit"),
        ({"name": " "}, "name"),
    ],
)
def test_create_refuses_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        apikey_create(**{"name": "x", **kwargs})
    assert not ApiKey.objects.exists()


def test_database_refuses_unknown_scopes_and_zero_rate_limits():
    key = ApiKeyFactory()
    with pytest.raises(IntegrityError), transaction.atomic():
        ApiKey.objects.filter(pk=key.pk).update(scopes=["root"])
    with pytest.raises(IntegrityError), transaction.atomic():
        ApiKey.objects.filter(pk=key.pk).update(rate_limit=0)


def test_create_retries_when_a_prefix_is_taken(monkeypatch):
    taken = ApiKeyFactory()
    clash = with_prefix(taken.prefix)
    fresh = keyformat.generate()
    keys = iter([clash, fresh])
    monkeypatch.setattr(keyformat, "generate", lambda: next(keys))
    key, raw = apikey_create(name="second")
    assert raw == fresh
    assert key.prefix != taken.prefix
    assert ApiKey.objects.count() == 2


def test_create_gives_up_when_every_prefix_is_taken(monkeypatch):
    taken = ApiKeyFactory()
    monkeypatch.setattr(keyformat, "generate", lambda: with_prefix(taken.prefix))
    with pytest.raises(IntegrityError):
        apikey_create(name="never")
    assert ApiKey.objects.count() == 1


def with_prefix(prefix: str) -> str:
    body = "gf_" + prefix + "c" * keyformat.SECRET_LENGTH
    return body + keyformat.checksum(body)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"rate_limit": 0}, "rate limit"), ({"name": ""}, "name"), ({"scopes": ["x"]}, "scope")],
)
def test_update_refuses_bad_settings(kwargs, message):
    key = ApiKeyFactory(name="kept")
    fields = {"name": "n", "scopes": ["read"], "rate_limit": 5, "expires_at": None, **kwargs}
    with pytest.raises(ValueError, match=message):
        apikey_update(key=key, **fields)
    assert ApiKey.objects.get(pk=key.pk).name == "kept"


def test_update_drops_the_cached_row():
    key = ApiKeyFactory(rate_limit=5)
    assert apikey_get_by_prefix(prefix=key.prefix).rate_limit == 5
    apikey_update(key=key, name=key.name, scopes=key.scopes, rate_limit=6, expires_at=None)
    assert key.prefix not in selectors._rows
    assert apikey_get_by_prefix(prefix=key.prefix).rate_limit == 6


def test_find_by_id_prefix_or_nothing():
    key = ApiKeyFactory()
    assert apikey_find(id_or_prefix=str(key.pk)) == key
    assert apikey_find(id_or_prefix=key.prefix) == key
    assert apikey_find(id_or_prefix="zzzzzzzz") is None
    assert apikey_find(id_or_prefix=str(key.pk + 1000)) is None


def test_find_an_eight_digit_id_when_no_prefix_matches():
    key = ApiKeyFactory()
    ApiKey.objects.filter(pk=key.pk).update(id=12345678)
    assert apikey_find(id_or_prefix="12345678").prefix == key.prefix
