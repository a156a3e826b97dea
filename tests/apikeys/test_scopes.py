import pytest
from django.core.exceptions import ImproperlyConfigured
from rest_framework.response import Response
from rest_framework.test import APIRequestFactory

from apikeys.base import ApiKeyView
from apikeys.models import Scope

pytestmark = pytest.mark.django_db


class WriteView(ApiKeyView):
    required_scope = Scope.WRITE

    def post(self, request):
        return Response({"key": request.auth.prefix}, status=201)


class ReadView(ApiKeyView):
    required_scope = "read"

    def get(self, request):
        return Response({"key": request.user.prefix})


def call(view: type[ApiKeyView], method: str, raw: str):
    request = getattr(APIRequestFactory(), method)("/x", {}, format="json", HTTP_X_API_KEY=raw)
    response = view.as_view()(request)
    response.render()
    return response


@pytest.mark.parametrize(
    ("view", "method", "scopes", "status"),
    [
        (WriteView, "post", ["write"], 201),
        (WriteView, "post", ["read"], 403),
        (WriteView, "post", [], 403),
        (ReadView, "get", ["read"], 200),
        (ReadView, "get", ["write"], 403),
        (ReadView, "get", ["read", "write"], 200),
    ],
)
def test_views_serve_only_keys_with_their_scope(view, method, scopes, status, make_api_client):
    client = make_api_client(scopes=scopes)
    response = call(view, method, client.raw_key)
    assert response.status_code == status
    if status == 403:
        body = response.data
        assert response["Content-Type"] == "application/problem+json"
        assert body["type"] == "urn:glowing-fiesta:problem:insufficient-scope"
        assert view.required_scope in body["detail"]
    else:
        assert response.data == {"key": client.api_key.prefix}


def test_wrong_scope_response_still_carries_rate_limit_headers(make_api_client):
    client = make_api_client(scopes=["read"], rate_limit=7)
    response = call(WriteView, "post", client.raw_key)
    assert response.status_code == 403
    assert response["X-RateLimit-Limit"] == "7"
    assert response["X-RateLimit-Remaining"] == "6"


def test_base_view_without_a_key_says_missing():
    request = APIRequestFactory().get("/x")
    response = ReadView.as_view()(request)
    assert response.status_code == 401
    assert response.data["type"].endswith("api-key-missing")


def test_a_view_declaring_an_unknown_scope_is_refused_at_import():
    with pytest.raises(ImproperlyConfigured):

        class Broken(ApiKeyView):
            required_scope = "root"


def test_keys_me_needs_no_scope(make_api_client):
    for scopes in (["read"], ["write"], []):
        assert make_api_client(scopes=scopes).get("/api/keys/me").status_code == 200


# The metrics endpoints, as clients see them.


def test_read_only_key_cannot_ingest(make_api_client):
    client = make_api_client(scopes=["read"])
    response = client.post("/api/metrics/counter", {"name": "x"}, format="json")
    assert response.status_code == 403
    assert response.json()["type"].endswith("insufficient-scope")
    assert response["X-RateLimit-Limit"]


def test_write_key_can_ingest(make_api_client):
    client = make_api_client(scopes=["write"])
    response = client.post("/api/metrics/counter", {"name": "x"}, format="json")
    assert response.status_code == 201
    assert response["X-RateLimit-Remaining"]


def test_write_only_key_cannot_query(make_api_client):
    client = make_api_client(scopes=["write"])
    response = client.get("/api/metrics/x")
    assert response.status_code == 403
    assert response.json()["type"].endswith("insufficient-scope")


def test_read_key_can_query(make_api_client):
    make_api_client(scopes=["write"]).post("/api/metrics/counter", {"name": "x"}, format="json")
    response = make_api_client(scopes=["read"]).get("/api/metrics/x")
    assert response.status_code == 200
    assert response["X-RateLimit-Limit"]
