"""A key's namespaces: set by the command, the admin and the service, checked the same way
everywhere, shown by list_api_keys and GET /api/keys/me, held with the cached key row."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext

from apikeys.models import ApiKey
from apikeys.namespaces import (
    NAMESPACES_MAX,
    namespace_allows,
    namespace_checker,
    namespaces_check,
    namespaces_outside,
)
from apikeys.selectors import apikey_rows_clear
from apikeys.services import apikey_create, apikey_update
from tests.factories import ApiKeyFactory

pytestmark = pytest.mark.django_db

CHANGE = "/admin/apikeys/apikey/{}/change/"
ADD = "/admin/apikeys/apikey/add/"


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def run(*args: str) -> list[str]:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue().splitlines()


def test_the_one_decision():
    assert namespace_allows((), "anything.at.all")
    assert namespace_allows(("checkout.", "shared.web."), "checkout.orders")
    assert namespace_allows(("checkout.", "shared.web."), "shared.web.hits")
    assert not namespace_allows(("checkout.", "shared.web."), "shared.db.hits")
    assert not namespace_allows(("checkout.",), "checkout")  # the prefix is the whole prefix
    assert not namespace_allows(("checkout.",), "Checkout.orders")  # names are case sensitive
    assert namespace_checker([]) is None
    assert namespace_checker(["a."])("a.b") and not namespace_checker(["a."])("b.a")
    assert namespaces_outside(("a.",), ["a.x", "b.x", "a.y", "b.x"]) == [1, 3]
    assert namespaces_outside((), ["b.x"]) == []


@pytest.mark.parametrize(
    "prefixes, word",
    [
        ([""], "invalid namespace"),
        (["has space."], "invalid namespace"),
        (["é."], "invalid namespace"),
        (["x" * 192], "invalid namespace"),
        ([f"p{i}." for i in range(NAMESPACES_MAX + 1)], "at most 20"),
    ],
)
def test_bad_namespaces_are_refused_with_a_clear_message(prefixes, word):
    with pytest.raises(ValueError, match=word):
        namespaces_check(prefixes)
    with pytest.raises(ValueError, match=word):
        apikey_create(name="n", namespaces=prefixes)
    assert not ApiKey.objects.exists()


def test_twenty_namespaces_of_191_characters_are_fine_and_repeats_go():
    prefixes = [f"{i:02}" + "x" * 189 for i in range(NAMESPACES_MAX)]
    assert namespaces_check([*prefixes, prefixes[0]]) == prefixes
    key, _ = apikey_create(name="wide", namespaces=prefixes)
    key.refresh_from_db()
    assert key.namespaces == prefixes


def test_create_api_key_takes_namespaces_and_list_api_keys_shows_them(client):
    lines = run("create_api_key", "checkout", "--namespaces", "checkout., shared.web.")
    assert "namespaces checkout.,shared.web." in lines[0]
    key = ApiKey.objects.get(name="checkout")
    assert key.namespaces == ["checkout.", "shared.web."]
    me = client.get("/api/keys/me", HTTP_X_API_KEY=lines[-1])
    assert me.json()["namespaces"] == ["checkout.", "shared.web."]
    run("create_api_key", "everything")
    rows = {line.split()[1]: line.split() for line in run("list_api_keys")[1:]}
    assert rows["checkout"][4] == "checkout.,shared.web."
    assert rows["everything"][4] == "all"


@pytest.mark.parametrize("value", ["bad name.", ",".join(f"p{i}." for i in range(21))])
def test_create_api_key_refuses_bad_namespaces(value):
    with pytest.raises(CommandError, match="--namespaces"):
        call_command("create_api_key", "x", "--namespaces", value, stdout=StringIO())
    assert not ApiKey.objects.exists()


def test_the_admin_edits_namespaces_with_the_same_checks(admin_client):
    key = ApiKeyFactory(name="k", scopes=["read"])
    form = {"name": "k", "scopes": ["read"], "rate_limit": "60", "expires_at": ""}
    page = admin_client.get(CHANGE.format(key.pk)).content.decode()
    assert 'name="namespaces"' in page
    refused = admin_client.post(CHANGE.format(key.pk), {**form, "namespaces": "ok., not ok."})
    assert refused.status_code == 200 and "invalid namespace" in refused.content.decode()
    assert ApiKey.objects.get(pk=key.pk).namespaces == []
    saved = admin_client.post(CHANGE.format(key.pk), {**form, "namespaces": "a., b.c."})
    assert saved.status_code == 302
    assert ApiKey.objects.get(pk=key.pk).namespaces == ["a.", "b.c."]
    page = admin_client.get(CHANGE.format(key.pk)).content.decode()
    assert 'value="a., b.c."' in page
    listing = admin_client.get("/admin/apikeys/apikey/").content.decode()
    assert "a., b.c." in listing
    added = admin_client.post(ADD, {**form, "name": "new", "namespaces": "team."})
    assert added.status_code == 302
    assert ApiKey.objects.get(name="new").namespaces == ["team."]


def test_the_cached_key_row_carries_the_namespaces(make_api_client, settings):
    settings.API_KEY_CACHE_SECONDS = 5
    apikey_rows_clear()
    client = make_api_client(namespaces=["team_a."])
    assert client.get("/api/keys/me").status_code == 200  # the row is now held
    with CaptureQueriesContext(connection) as queries:
        response = client.get("/api/metrics/team_b.cpu")
    assert response.status_code == 404
    # Authenticated from the held row, refused by its namespaces: no query at all.
    assert [q["sql"] for q in queries.captured_queries] == []
    apikey_update(
        key=client.api_key,
        name="test",
        scopes=["read", "write"],
        rate_limit=100_000,
        expires_at=None,
        namespaces=["team_b."],
    )
    assert client.get("/api/keys/me").json()["namespaces"] == ["team_b."]
