"""The JSON endpoints take their body as sent: no Content-Encoding but identity (415 otherwise,
naming it), whatever the bytes would decode to."""

import gzip
import json
import zlib

import pytest

from metrics.models import Metric
from tests.helpers import assert_problem

pytestmark = pytest.mark.django_db

BODY = json.dumps({"name": "enc.counter", "value": 2}).encode()


@pytest.mark.parametrize("encoding", [None, "identity", "IDENTITY", " identity "])
def test_a_body_without_an_encoding_or_identity_is_stored(api_client, encoding):
    headers = {"Content-Encoding": encoding} if encoding is not None else {}

    response = api_client.post(
        "/api/metrics/counter", BODY, content_type="application/json", headers=headers
    )

    assert response.status_code == 201, response.content
    assert Metric.objects.filter(name="enc.counter").exists()


@pytest.mark.parametrize(
    ("encoding", "body"),
    [
        pytest.param("gzip", gzip.compress(BODY), id="gzip"),
        pytest.param("x-gzip", gzip.compress(BODY), id="x-gzip"),
        pytest.param("deflate", zlib.compress(BODY), id="deflate"),
        # The bytes are plain JSON: taking them as such would store what the client may not mean.
        pytest.param("br", BODY, id="br"),
        pytest.param("identity, gzip", gzip.compress(BODY), id="identity, gzip"),
        pytest.param("compress", BODY, id="compress"),
    ],
)
@pytest.mark.parametrize("path", ["/api/metrics/counter", "/api/metrics/value"])
def test_any_other_encoding_is_415_naming_it_and_nothing_is_stored(
    api_client, encoding, body, path
):
    response = api_client.post(
        path, body, content_type="application/json", headers={"Content-Encoding": encoding}
    )

    problem = assert_problem(response, 415, "unsupported-media-type")
    assert repr(encoding) in problem["detail"]
    assert not Metric.objects.exists()


def test_an_encoded_batch_is_415_and_stores_nothing(api_client):
    body = json.dumps({"points": [{"type": "counter", "name": "enc.batch"}]}).encode()

    response = api_client.post(
        "/api/metrics/batch",
        gzip.compress(body),
        content_type="application/json",
        headers={"Content-Encoding": "gzip", "Idempotency-Key": "enc-1"},
    )
    retry = api_client.post(
        "/api/metrics/batch",
        body,
        content_type="application/json",
        headers={"Idempotency-Key": "enc-1"},
    )

    assert_problem(response, 415, "unsupported-media-type", "gzip")
    assert retry.status_code == 201, retry.content
    assert list(Metric.objects.values_list("name", flat=True)) == ["enc.batch"]
