import time
import types
import uuid
from collections.abc import Callable, Iterable, Iterator

import pytest
from django.contrib.auth.models import User
from django.test import Client
from rest_framework.test import APIClient

from apikeys import selectors as apikeys_selectors
from apikeys.models import ApiKey
from apikeys.services import apikey_create
from glowing_fiesta import failopen
from metrics import caches, partitions
from metrics.batches import dispatch
from promql import hours
from tests.helpers import RATE_CLOCKS, truncate_point_tables

pytest_plugins = ["tests.browser", "tests.processes"]


@pytest.fixture(autouse=True)
def _fresh_storage_caches():
    """In-process caches must not carry ids across tests whose transactions were rolled back."""
    caches.caches_clear()
    partitions.partitions_forget()
    hours.hours_clear()
    yield
    caches.caches_clear()
    partitions.partitions_forget()
    hours.hours_clear()


@pytest.fixture(autouse=True)
def _redis_not_paused():
    """A test that made Redis unreachable must not leave the next one skipping Redis."""
    failopen.reset()
    dispatch.broker_pause_reset()
    dispatch.wake_clear()  # a wake-up another test armed on the default queue
    apikeys_selectors.apikey_rows_clear()
    yield
    failopen.reset()
    dispatch.broker_pause_reset()
    apikeys_selectors.apikey_rows_clear()


@pytest.fixture(autouse=True)
def _fresh_rate_counters(settings):
    """Counters live in Redis, outside the test transaction: each test counts from zero, so
    failed authentications of one test never push the next one's address over the limit."""
    settings.RATELIMIT_CACHE_PREFIX = f"rl:{uuid.uuid4().hex}:"


@pytest.fixture
def rate_windows_held(monkeypatch):
    """The rate windows held still: the clocks of the per-key limit (apikeys.ratelimit) and of
    the failed-authentication limit (glowing_fiesta.bruteforce, django-ratelimit) stop at their
    first reading. A window is fixed and ends at some second of every minute, so a test that
    counts requests up to a limit would, now and then, see its window end between two of them."""
    first: list[float] = []

    def now() -> float:
        if not first:
            first.append(time.time())
        return first[0]

    for module in RATE_CLOCKS:
        monkeypatch.setattr(f"{module}.time", types.SimpleNamespace(time=now))


@pytest.fixture
def client_anon() -> APIClient:
    return APIClient()


@pytest.fixture
def api_key(db) -> tuple[ApiKey, str]:
    """A fresh key with both scopes and a high rate limit, and its raw form."""
    return apikey_create(name="test", scopes=["read", "write"], rate_limit=100_000)


@pytest.fixture
def make_api_client(db) -> Callable[..., APIClient]:
    """Build an APIClient sending a fresh key; the key is on `client.api_key`, raw on `.raw_key`.

    Every call makes a new key, so rate-limit counters (kept in Redis, outside the test
    transaction) never carry over between tests.
    """

    def make(
        scopes: Iterable[str] = ("read", "write"),
        rate_limit: int = 100_000,
        **kwargs,
    ) -> APIClient:
        key, raw = apikey_create(
            name=kwargs.pop("name", "test"), scopes=list(scopes), rate_limit=rate_limit, **kwargs
        )
        client = APIClient()
        client.credentials(HTTP_X_API_KEY=raw)
        client.api_key = key
        client.raw_key = raw
        return client

    return make


@pytest.fixture
def api_client(make_api_client) -> APIClient:
    """An APIClient with a fresh read+write key and a high rate limit."""
    return make_api_client()


@pytest.fixture
def admin_client_logged(db, client: Client) -> Client:
    """Django's test client logged in as a superuser (root), for the admin's pages."""
    user = User.objects.create_superuser("root", "root@example.com", "pw")
    client.force_login(user)
    return client


@pytest.fixture
def clean_point_tables() -> Iterator[None]:
    """For `transaction=True` tests: Django's flush skips the unmanaged point and rollup tables,
    so they are emptied before (whatever an earlier test left) and after."""
    truncate_point_tables()
    yield
    truncate_point_tables()
