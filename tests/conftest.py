import pytest
from rest_framework.test import APIClient

from metrics import storage


@pytest.fixture(autouse=True)
def _fresh_storage_caches():
    """In-process caches must not carry ids across tests whose transactions were rolled back."""
    storage.caches_clear()
    storage.partitions_forget()
    yield
    storage.caches_clear()
    storage.partitions_forget()


@pytest.fixture
def client_anon() -> APIClient:
    return APIClient()
