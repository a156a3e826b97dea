"""Failed authentications are limited per client address: API keys and the admin login."""

import pytest
from django.contrib.auth.models import User
from django.test import Client, RequestFactory
from rest_framework.test import APIClient

from glowing_fiesta.bruteforce import client_address
from tests.apikeys.test_ratelimit import DEAD_REDIS, travel

# Every test here counts failures against a window: held still, it cannot end between two.
pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("rate_windows_held")]

ME = "/api/keys/me"
WRONG = "gf_live_notarealkeyatall"


@pytest.fixture
def three_per_minute(settings):
    settings.AUTH_FAILURE_RATE = "3/m"


def _get(client: APIClient, key: str, **meta: str):
    return client.get(ME, HTTP_X_API_KEY=key, **meta)


def test_past_the_limit_an_address_gets_429_before_any_key_lookup(
    three_per_minute, client_anon, api_key, django_assert_num_queries
):
    _, raw = api_key
    wrong = raw[:-4] + ("aaaa" if not raw.endswith("aaaa") else "bbbb")
    assert [_get(client_anon, wrong).status_code for _ in range(3)] == [401, 401, 401]
    with django_assert_num_queries(0):
        response = _get(client_anon, raw)  # even the right key, from this address
    assert response.status_code == 429
    assert response["Content-Type"] == "application/problem+json"
    assert response.json()["type"].endswith(":rate-limited")
    assert 1 <= int(response["Retry-After"]) <= 60


def test_the_limit_is_per_address_and_valid_keys_do_not_count(
    three_per_minute, client_anon, api_key
):
    _, raw = api_key
    assert [_get(client_anon, raw).status_code for _ in range(5)] == [200] * 5
    for _ in range(3):
        _get(client_anon, WRONG, REMOTE_ADDR="10.0.0.1")
    assert _get(client_anon, WRONG, REMOTE_ADDR="10.0.0.1").status_code == 429
    assert _get(client_anon, raw, REMOTE_ADDR="10.0.0.2").status_code == 200
    assert _get(client_anon, raw).status_code == 200


def test_the_address_is_served_again_after_the_window(
    three_per_minute, client_anon, api_key, monkeypatch
):
    _, raw = api_key
    for _ in range(3):
        _get(client_anon, WRONG)
    assert _get(client_anon, raw).status_code == 429
    travel(monkeypatch, 60)
    assert _get(client_anon, raw).status_code == 200


def test_default_limit_is_100_failures_a_minute(client_anon, api_key):
    _, raw = api_key
    statuses = [_get(client_anon, WRONG).status_code for _ in range(100)]
    assert set(statuses) == {401}
    assert _get(client_anon, raw).status_code == 429


def test_behind_a_proxy_the_right_most_untrusted_forwarded_address_is_counted(
    three_per_minute, settings, client_anon, api_key
):
    settings.TRUSTED_PROXY_COUNT = 1
    _, raw = api_key
    for forged in ("1.1.1.1", "2.2.2.2", "3.3.3.3"):
        # The client writes whatever it likes on the left; the proxy appends the real address.
        _get(client_anon, WRONG, HTTP_X_FORWARDED_FOR=f"{forged}, 203.0.113.7")
    assert _get(client_anon, raw, HTTP_X_FORWARDED_FOR="203.0.113.7").status_code == 429
    assert _get(client_anon, raw, HTTP_X_FORWARDED_FOR="203.0.113.8").status_code == 200


@pytest.mark.parametrize(
    ("count", "forwarded", "expected"),
    [
        (0, "198.51.100.1", "192.0.2.9"),
        (1, "198.51.100.1", "198.51.100.1"),
        (1, "6.6.6.6, 198.51.100.1", "198.51.100.1"),
        (2, "6.6.6.6, 198.51.100.1, 10.0.0.5", "198.51.100.1"),
        (2, "198.51.100.1", "192.0.2.9"),
        (1, "", "192.0.2.9"),
    ],
)
def test_client_address(settings, count, forwarded, expected):
    settings.TRUSTED_PROXY_COUNT = count
    request = RequestFactory().get("/", REMOTE_ADDR="192.0.2.9", HTTP_X_FORWARDED_FOR=forwarded)
    assert client_address(request) == expected


def test_failures_are_not_counted_and_nothing_refused_when_redis_is_down(
    three_per_minute, settings, client_anon
):
    settings.CACHES = DEAD_REDIS
    assert {_get(client_anon, WRONG).status_code for _ in range(5)} == {401}


def test_the_admin_login_is_limited_the_same_way(three_per_minute):
    User.objects.create_superuser("root", "root@example.com", "right-password")
    client = Client()
    for _ in range(3):
        response = client.post("/admin/login/", {"username": "root", "password": "wrong"})
        assert response.status_code == 200  # the form again, with its error
    response = client.post("/admin/login/", {"username": "root", "password": "right-password"})
    assert response.status_code == 429
    assert response["Content-Type"] == "application/problem+json"
    assert int(response["Retry-After"]) >= 1
    assert client.get("/admin/").status_code == 302  # still not logged in
    assert (
        Client(REMOTE_ADDR="10.9.9.9")
        .post("/admin/login/", {"username": "root", "password": "right-password"})
        .status_code
        == 302
    )


def test_a_key_held_in_process_is_refused_with_the_same_429_and_not_counted(
    three_per_minute, client_anon, api_key, django_assert_num_queries
):
    """With the key's row in this process, the failures are read in the rate limit's round trip
    (one script): the address over the limit still gets 429 before anything is counted or
    written, and the key's own window is not charged for the refusals."""
    _, raw = api_key
    first = _get(client_anon, raw)  # the row is now held, and the key marked used
    assert first.status_code == 200
    remaining = int(first["X-RateLimit-Remaining"])
    for _ in range(3):
        assert _get(client_anon, WRONG).status_code == 401
    with django_assert_num_queries(0):
        refused = [_get(client_anon, raw) for _ in range(3)]
    assert [r.status_code for r in refused] == [429] * 3
    assert all(1 <= int(r["Retry-After"]) <= 60 for r in refused)
    assert all("X-RateLimit-Remaining" not in r for r in refused)
    # From another address the same key is served, charged one request, not four.
    other = _get(client_anon, raw, REMOTE_ADDR="10.0.0.9")
    assert other.status_code == 200
    assert int(other["X-RateLimit-Remaining"]) == remaining - 1
