import logging
import time
import types

import pytest
from django.conf import settings
from django.core.cache import caches
from django_redis import get_redis_connection

from apikeys import ratelimit
from glowing_fiesta import failopen
from tests.apikeys.test_authentication import ME
from tests.helpers import RATE_CLOCKS

# Every test here counts requests against a window: held still, it cannot end between two.
pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("rate_windows_held")]

DEAD_REDIS = {
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": "redis://127.0.0.1:1/0",
        "KEY_PREFIX": "gf",
        "OPTIONS": {
            "CLIENT_CLASS": "django_redis.client.DefaultClient",
            "SOCKET_CONNECT_TIMEOUT": 0.25,
            "SOCKET_TIMEOUT": 0.25,
        },
    }
}


def travel(monkeypatch, seconds: int) -> None:
    """Move the clocks of the counters (and so their windows) forward: the per-key limit's and
    django-ratelimit's, which counts failed authentications."""
    real = time.time
    later = types.SimpleNamespace(time=lambda: real() + seconds)
    for module in RATE_CLOCKS:
        monkeypatch.setattr(f"{module}.time", later)


def test_every_authenticated_response_carries_rate_limit_headers(make_api_client):
    client = make_api_client(rate_limit=5)
    before = int(time.time())
    remaining = []
    for _ in range(3):
        response = client.get(ME)
        assert response.status_code == 200
        assert response["X-RateLimit-Limit"] == "5"
        reset = int(response["X-RateLimit-Reset"])
        assert before <= reset <= int(time.time()) + 60
        remaining.append(int(response["X-RateLimit-Remaining"]))
    assert remaining == [4, 3, 2]


def test_request_over_the_limit_gets_429_with_retry_after(make_api_client):
    client = make_api_client(rate_limit=3)
    for _ in range(3):
        assert client.get(ME).status_code == 200
    response = client.get(ME)
    assert response.status_code == 429
    assert response["Content-Type"] == "application/problem+json"
    body = response.json()
    assert body["type"] == "urn:glowing-fiesta:problem:rate-limited"
    assert body["status"] == 429
    assert "3 requests per minute" in body["detail"]
    retry_after = int(response["Retry-After"])
    assert 1 <= retry_after <= 60
    assert response["X-RateLimit-Limit"] == "3"
    assert response["X-RateLimit-Remaining"] == "0"
    assert abs(int(response["X-RateLimit-Reset"]) - (int(time.time()) + retry_after)) <= 1


def test_a_limit_of_one_serves_exactly_one_request(make_api_client):
    client = make_api_client(rate_limit=1)
    assert client.get(ME).status_code == 200
    assert client.get(ME).status_code == 429


def test_served_again_after_the_window(make_api_client, monkeypatch):
    client = make_api_client(rate_limit=2)
    assert [client.get(ME).status_code for _ in range(3)] == [200, 200, 429]
    travel(monkeypatch, 60)
    response = client.get(ME)
    assert response.status_code == 200
    assert response["X-RateLimit-Remaining"] == "1"


def test_limits_are_per_key(make_api_client):
    busy = make_api_client(rate_limit=1)
    other = make_api_client(rate_limit=1)
    assert busy.get(ME).status_code == 200
    assert busy.get(ME).status_code == 429
    assert other.get(ME).status_code == 200


def test_refused_method_after_authentication_still_counts_and_has_headers(make_api_client):
    client = make_api_client(rate_limit=2)
    response = client.post(ME, {}, format="json")
    assert response.status_code == 405
    assert response["X-RateLimit-Remaining"] == "1"
    assert client.get(ME)["X-RateLimit-Remaining"] == "0"


def test_unauthenticated_responses_have_no_rate_limit_headers(client_anon):
    response = client_anon.get(ME)
    assert response.status_code == 401
    assert "X-RateLimit-Limit" not in response


def test_raising_a_keys_limit_applies_to_its_next_request(make_api_client):
    from apikeys.services import apikey_update

    client = make_api_client(rate_limit=1)
    assert client.get(ME).status_code == 200
    assert client.get(ME).status_code == 429
    key = client.api_key
    apikey_update(key=key, name=key.name, scopes=key.scopes, rate_limit=10, expires_at=None)
    response = client.get(ME)
    assert response.status_code == 200
    assert response["X-RateLimit-Limit"] == "10"


@pytest.fixture
def dead_redis(settings):
    settings.CACHES = DEAD_REDIS  # pytest-django's settings fixture resets django.core.cache.caches
    failopen.reset()
    yield
    failopen.reset()


def test_requests_are_served_when_redis_is_down(make_api_client, dead_redis, caplog):
    client = make_api_client(rate_limit=1)
    with caplog.at_level(logging.ERROR, logger="glowing_fiesta.failopen"):
        responses = [client.get(ME) for _ in range(3)]
    assert [r.status_code for r in responses] == [200, 200, 200]
    assert all("X-RateLimit-Limit" not in r for r in responses)
    errors = [r for r in caplog.records if r.name == "glowing_fiesta.failopen"]
    assert errors and errors[0].levelname == "ERROR"
    assert "redis unavailable" in errors[0].getMessage()
    assert "ConnectionError" in errors[0].error


def test_rejections_still_work_when_redis_is_down(make_api_client, dead_redis):
    from apikeys.services import apikey_revoke

    client = make_api_client()
    apikey_revoke(key=client.api_key)
    response = client.get(ME)
    assert response.status_code == 401
    assert response.json()["type"].endswith("api-key-revoked")


def test_after_a_redis_failure_redis_is_skipped_for_a_pause(make_api_client, dead_redis, caplog):
    client = make_api_client()
    with caplog.at_level(logging.ERROR, logger="glowing_fiesta.failopen"):
        started = time.perf_counter()
        for _ in range(5):
            assert client.get(ME).status_code == 200
        elapsed = time.perf_counter() - started
    assert len([r for r in caplog.records if r.name == "glowing_fiesta.failopen"]) == 1
    assert elapsed < 2


def test_redis_is_used_again_once_the_pause_ends(make_api_client):
    client = make_api_client(rate_limit=5)
    failopen._paused_until = time.monotonic() - 1  # a pause that has just ended
    response = client.get(ME)
    assert response["X-RateLimit-Remaining"] == "4"


def test_a_window_ends_at_the_keys_own_offset_within_the_period():
    ends = {ratelimit.window_end(f"{i}:prefix{i}", now=1_000_000) for i in range(50)}
    assert all(1_000_000 < end <= 1_000_000 + ratelimit.PERIOD_SECONDS for end in ends)
    assert len(ends) > 10  # staggered: a fleet of keys does not reset at the same second
    end = ratelimit.window_end("1:abc", now=1_000_000)
    assert ratelimit.window_end("1:abc", now=end - 1) == end
    assert ratelimit.window_end("1:abc", now=end) == end + ratelimit.PERIOD_SECONDS


def test_a_request_costs_one_redis_round_trip_for_its_key_and_rate_limit(
    make_api_client, monkeypatch
):
    client = make_api_client(rate_limit=100)
    assert client.get(ME).status_code == 200  # the key row is now in this process's copy
    connection = get_redis_connection("default")
    commands = []
    real = type(connection).execute_command
    pipelines = []
    real_pipeline = type(connection).pipeline

    def counted(self, *args, **kwargs):
        commands.append(args[0])
        return real(self, *args, **kwargs)

    def counted_pipeline(self, *args, **kwargs):
        pipelines.append(args or kwargs)
        return real_pipeline(self, *args, **kwargs)

    monkeypatch.setattr(type(connection), "execute_command", counted)
    monkeypatch.setattr(type(connection), "pipeline", counted_pipeline)
    response = client.get(ME)
    assert response.status_code == 200
    assert response["X-RateLimit-Remaining"] == "98"
    # One script reads the address's failure counter and counts the key's window; the key row
    # itself came from memory.
    assert commands == ["EVALSHA"]
    assert pipelines == []
    ttl = connection.ttl(
        caches["default"].make_key(
            f"{settings.RATELIMIT_CACHE_PREFIX}{ratelimit.GROUP}:"
            f"{client.api_key.pk}:{client.api_key.prefix}:"
            f"{ratelimit.window_end(f'{client.api_key.pk}:{client.api_key.prefix}', now=int(time.time()))}"
        )
    )
    assert 0 < ttl <= ratelimit.PERIOD_SECONDS + 1
