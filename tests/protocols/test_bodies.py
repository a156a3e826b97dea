"""The one body reader of the protocol endpoints: the cap, gzip and deflate, the chunked rule,
and the mapping of its errors to problems."""

import gzip
import io
import tracemalloc
import zlib

import pytest
from rest_framework.exceptions import UnsupportedMediaType
from rest_framework.request import Request
from rest_framework.test import APIRequestFactory

from glowing_fiesta.exceptions import BodyIncomplete, InvalidInput, LengthRequired, PayloadTooLarge
from protocols.bodies import (
    GZIP,
    BodyMalformed,
    BodyTooLarge,
    EncodingUnsupported,
    body_read,
    request_body,
)


def test_plain_and_gzip_bodies_read_the_same():
    text = b"m f=1\n" * 1000
    assert body_read(io.BytesIO(text), content_length=None, limit=10**6) == text
    packed = io.BytesIO(gzip.compress(text))
    assert body_read(packed, content_length=None, encoding="gzip", limit=10**6) == text


def test_deflate_is_zlib_wrapped_and_identity_is_as_sent():
    text = b"m f=1\n" * 100
    deflated = io.BytesIO(zlib.compress(text))
    assert body_read(deflated, content_length=None, encoding="deflate", limit=10**6) == text
    assert body_read(io.BytesIO(text), content_length=None, encoding="identity", limit=10**6) == (
        text
    )


def test_concatenated_gzip_members_are_one_body():
    body = io.BytesIO(gzip.compress(b"m f=1\n") + gzip.compress(b"m f=2\n"))
    assert body_read(body, content_length=None, encoding="gzip", limit=1000) == b"m f=1\nm f=2\n"


def test_the_cap_holds_at_its_edge_plain_and_gzipped():
    text = b"x" * 5000
    assert len(body_read(io.BytesIO(text), content_length=None, limit=5000)) == 5000
    with pytest.raises(BodyTooLarge):
        body_read(io.BytesIO(text + b"x"), content_length=None, limit=5000)
    packed = io.BytesIO(gzip.compress(text))
    assert len(body_read(packed, content_length=None, encoding="gzip", limit=5000)) == 5000
    with pytest.raises(BodyTooLarge):
        packed = io.BytesIO(gzip.compress(text + b"x"))
        body_read(packed, content_length=None, encoding="gzip", limit=5000)


def test_a_declared_length_over_the_cap_is_refused_before_reading():
    class Unread:
        def read(self, n):
            raise AssertionError("read")

    with pytest.raises(BodyTooLarge):
        body_read(Unread(), content_length="11", limit=10)


def test_truncated_and_corrupt_gzip_are_malformed():
    packed = gzip.compress(b"m f=1\n" * 100)
    with pytest.raises(BodyMalformed, match="truncated"):
        body_read(io.BytesIO(packed[:-10]), content_length=None, encoding="gzip", limit=10**6)
    with pytest.raises(BodyMalformed, match="not valid gzip"):
        body_read(io.BytesIO(b"not gzip at all"), content_length=None, encoding="gzip", limit=10**6)


def test_an_encoding_outside_the_endpoints_list_is_refused():
    with pytest.raises(EncodingUnsupported):
        body_read(io.BytesIO(b"m f=1"), content_length=None, encoding="br", limit=100)
    with pytest.raises(EncodingUnsupported, match="send gzip or none"):
        body_read(
            io.BytesIO(zlib.compress(b"m f=1")),
            content_length=None,
            encoding="deflate",
            encodings=GZIP,
            limit=100,
        )


def test_a_gzip_bomb_never_holds_much_more_than_the_cap():
    # 256 MiB of zeros compress to about 256 KiB; the cap is 1 MiB.
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(1 << 20)
    bomb = b"".join(packer.compress(zeros) for _ in range(256)) + packer.flush()
    tracemalloc.start()
    try:
        with pytest.raises(BodyTooLarge):
            body_read(io.BytesIO(bomb), content_length=None, encoding="gzip", limit=1 << 20)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 3 << 20


# --- the request: the chunked rule and the problems ------------------------------------------


def _request(body=b"", **meta):
    request = APIRequestFactory().post("/v1/metrics", body, content_type="text/plain")
    request.META.update(meta)
    return Request(request)


def test_a_chunked_body_the_server_did_not_terminate_is_411():
    request = _request(HTTP_TRANSFER_ENCODING="chunked", CONTENT_LENGTH="")
    with pytest.raises(LengthRequired):
        request_body(request, limit=100)


def test_a_chunked_body_the_server_terminated_is_read_from_the_wsgi_input_to_its_end():
    request = _request(
        HTTP_TRANSFER_ENCODING="chunked",
        CONTENT_LENGTH="",
        **{"wsgi.input_terminated": True, "wsgi.input": io.BytesIO(b"m f=1\n")},
    )
    assert request_body(request, limit=100) == b"m f=1\n"


@pytest.mark.parametrize(
    ("body", "headers", "problem"),
    [
        (b"x" * 101, {}, PayloadTooLarge),
        (b"not gzip", {"HTTP_CONTENT_ENCODING": "gzip"}, InvalidInput),
        (b"x", {"HTTP_CONTENT_ENCODING": "br"}, UnsupportedMediaType),
    ],
)
def test_each_body_error_is_the_problem_of_its_status(body, headers, problem):
    with pytest.raises(problem):
        request_body(_request(body, **headers), limit=100)


def test_a_body_cut_off_before_its_length_passes_through_as_body_incomplete():
    class CutOff(io.BytesIO):
        def read(self, n=-1):
            raise BodyIncomplete("The body ended after 3 of its 19 bytes.")

    request = _request(HTTP_TRANSFER_ENCODING="chunked", CONTENT_LENGTH="")
    request.META.update({"wsgi.input_terminated": True, "wsgi.input": CutOff()})
    with pytest.raises(BodyIncomplete):
        request_body(request, limit=100)


def test_without_encodings_the_body_is_returned_as_sent():
    request = _request(b"\xff\x00snappy", HTTP_CONTENT_ENCODING="snappy")
    assert request_body(request, limit=100, encodings=None) == b"\xff\x00snappy"
