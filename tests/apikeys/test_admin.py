import re
from datetime import timedelta

import pytest
from django.contrib.admin.models import ADDITION, LogEntry
from django.utils import timezone

from apikeys import keyformat
from apikeys.models import ApiKey
from tests.factories import ApiKeyFactory

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/apikeys/apikey/"
ADD = "/admin/apikeys/apikey/add/"
KEY_IN_PAGE = re.compile(r"gf_[0-9A-Za-z]{44}")


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    # admin_client creates a superuser per test; the real hasher would dominate the run time.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def test_changelist_shows_keys_and_statuses_but_no_hash(admin_client):
    active = ApiKeyFactory(name="active-key", scopes=["read"], rate_limit=17)
    revoked = ApiKeyFactory(name="revoked-key", revoked_at=timezone.now())
    ApiKeyFactory(name="expired-key", expires_at=timezone.now() - timedelta(hours=1))
    page = admin_client.get(CHANGELIST).content.decode()
    for text in ("active-key", active.prefix, "revoked-key", "expired-key", ">17<"):
        assert text in page
    assert re.search(r">active<", page) and ">revoked<" in page and ">expired<" in page
    assert active.key_hash not in page and revoked.key_hash not in page
    assert not KEY_IN_PAGE.search(page)


def test_changelist_searches_by_name_and_prefix(admin_client):
    wanted = ApiKeyFactory(name="billing")
    other = ApiKeyFactory(name="frontend")
    for query in ("billing", wanted.prefix):
        page = admin_client.get(CHANGELIST, {"q": query}).content.decode()
        assert wanted.prefix in page and other.prefix not in page


@pytest.mark.parametrize("status", ["active", "revoked", "expired"])
def test_changelist_filters_by_status(admin_client, status):
    keys = {
        "active": ApiKeyFactory(),
        "revoked": ApiKeyFactory(revoked_at=timezone.now()),
        "expired": ApiKeyFactory(expires_at=timezone.now() - timedelta(hours=1)),
    }
    page = admin_client.get(CHANGELIST, {"status": status}).content.decode()
    for name, key in keys.items():
        assert (key.prefix in page) == (name == status)


def test_adding_a_key_shows_it_once_and_stores_only_its_hash(admin_client):
    form = admin_client.get(ADD).content.decode()
    assert 'name="key_hash"' not in form and 'name="prefix"' not in form
    response = admin_client.post(
        ADD, {"name": "from-admin", "scopes": ["read"], "rate_limit": "30", "expires_at": ""}
    )
    key = ApiKey.objects.get()
    created = f"{CHANGELIST}{key.pk}/created/"
    assert response.status_code == 302
    assert response["Location"] == created
    assert not KEY_IN_PAGE.findall(response.content.decode())
    response = admin_client.get(created)
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    page = response.content.decode()
    [raw] = set(KEY_IN_PAGE.findall(page))
    assert (key.name, key.scopes, key.rate_limit) == ("from-admin", ["read"], 30)
    assert key.prefix == keyformat.parse(raw).prefix and keyformat.matches(raw, key.key_hash)
    assert key.key_hash not in page
    assert LogEntry.objects.filter(object_id=str(key.pk), action_flag=ADDITION).exists()
    later = (
        admin_client.get(CHANGELIST).content.decode()
        + admin_client.get(f"{CHANGELIST}{key.pk}/change/").content.decode()
    )
    assert raw not in later and key.key_hash not in later
    assert admin_client.get("/api/keys/me", HTTP_X_API_KEY=raw).status_code == 200


def test_adding_a_key_with_an_expiry(admin_client):
    response = admin_client.post(
        ADD,
        {
            "name": "temp",
            "scopes": ["read", "write"],
            "rate_limit": "600",
            "expires_at_0": "2030-01-02",
            "expires_at_1": "03:04:05",
        },
        follow=True,
    )
    assert response.status_code == 200
    key = ApiKey.objects.get()
    assert key.expires_at.isoformat() == "2030-01-02T03:04:05+00:00"
    assert "expires" in response.content.decode()


def test_add_form_refuses_a_key_without_a_rate_limit(admin_client):
    response = admin_client.post(ADD, {"name": "x", "scopes": ["read"], "rate_limit": "0"})
    assert response.status_code == 200
    assert "errornote" in response.content.decode()
    assert not ApiKey.objects.exists()


def test_changing_a_key_keeps_its_secret(admin_client):
    key = ApiKeyFactory(name="old", scopes=["read", "write"])
    page = admin_client.get(f"{CHANGELIST}{key.pk}/change/").content.decode()
    assert key.key_hash not in page and key.prefix in page
    response = admin_client.post(
        f"{CHANGELIST}{key.pk}/change/",
        {"name": "new", "scopes": ["write"], "rate_limit": "99", "expires_at": ""},
    )
    assert response.status_code == 302
    stored = ApiKey.objects.get(pk=key.pk)
    assert (stored.name, stored.scopes, stored.rate_limit) == ("new", ["write"], 99)
    assert stored.key_hash == key.key_hash
    response = admin_client.get("/api/keys/me", HTTP_X_API_KEY=key.raw_key)
    assert response.json()["rate_limit"] == 99


def test_revoke_selected_action_revokes_only_the_selected_keys(admin_client):
    chosen = [ApiKeyFactory(), ApiKeyFactory()]
    spared = ApiKeyFactory()
    response = admin_client.post(
        CHANGELIST,
        {"action": "revoke_selected", "_selected_action": [k.pk for k in chosen]},
        follow=True,
    )
    assert "Revoked 2 key(s)." in response.content.decode()
    assert ApiKey.objects.filter(revoked_at__isnull=False).count() == 2
    spared.refresh_from_db()
    assert spared.revoked_at is None
    for key in chosen:
        answer = admin_client.get("/api/keys/me", HTTP_X_API_KEY=key.raw_key).json()
        assert answer["type"].endswith("api-key-revoked")


def test_keys_cannot_be_deleted_from_the_admin(admin_client):
    key = ApiKeyFactory()
    assert admin_client.get(f"{CHANGELIST}{key.pk}/delete/").status_code == 403
    assert "delete_selected" not in admin_client.get(CHANGELIST).content.decode()


def test_reloading_the_created_page_shows_the_key_no_more_and_creates_nothing(admin_client):
    response = admin_client.post(
        ADD, {"name": "once", "scopes": ["read"], "rate_limit": "30", "expires_at": ""}, follow=True
    )
    [raw] = set(KEY_IN_PAGE.findall(response.content.decode()))
    created = response.redirect_chain[-1][0]
    again = admin_client.get(created)
    assert again.status_code == 200
    assert raw not in again.content.decode()
    assert 'id="key-gone"' in again.content.decode()
    assert ApiKey.objects.count() == 1
    assert "apikeys.new_key" not in admin_client.session


def test_the_created_page_of_another_key_shows_no_raw_key(admin_client):
    admin_client.post(ADD, {"name": "a", "scopes": ["read"], "rate_limit": "30"})
    other = ApiKeyFactory()
    page = admin_client.get(f"{CHANGELIST}{other.pk}/created/").content.decode()
    assert not KEY_IN_PAGE.findall(page)
    assert "apikeys.new_key" in admin_client.session  # still waiting for its own page
