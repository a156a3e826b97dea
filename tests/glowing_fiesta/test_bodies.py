"""BodyStream and BodyCompleteMiddleware in-process: a body that ends before its Content-Length
is refused with 400 `body-incomplete` wherever it is read; a whole one reads as before.

Over real sockets, against gunicorn and through nginx: tests/security/test_cut_bodies.py."""

import io
import json

import pytest

from glowing_fiesta.exceptions import BodyIncomplete
from glowing_fiesta.middleware import BodyStream
from metrics.models import Metric
from tests.helpers import assert_problem

pytestmark = pytest.mark.django_db

BODY = json.dumps({"name": "bodies.counter", "value": 7}).encode()


class Trickle(io.BytesIO):
    """A stream that returns at most 3 bytes a read, as a socket may."""

    def read(self, size=-1, /):
        return super().read(3 if size is None or size < 0 else min(size, 3))

    def readline(self, size=-1, /):
        return super().readline(3 if size is None or size < 0 else min(size, 3))


def test_a_whole_body_reads_whole_even_in_small_pieces():
    stream = BodyStream(Trickle(BODY + b"next request"), len(BODY))

    assert stream.read() == BODY
    assert stream.read() == b""
    assert stream.failure is None


def test_reads_of_a_size_get_that_size_and_never_pass_the_declared_end():
    stream = BodyStream(Trickle(b"0123456789tail"), 10)

    assert stream.read(4) == b"0123"
    assert stream.read(100) == b"456789"
    assert stream.read(1) == b""


def test_a_body_one_byte_short_is_incomplete():
    stream = BodyStream(io.BytesIO(BODY[:-1]), len(BODY))

    with pytest.raises(BodyIncomplete) as refused:
        stream.read()

    assert stream.failure is refused.value
    assert f"after {len(BODY) - 1} of the {len(BODY)} bytes" in refused.value.detail


def test_readline_stops_at_lines_and_at_the_declared_end():
    stream = BodyStream(io.BytesIO(b"one\ntwo\nthree"), 13)

    assert [stream.readline(), stream.readline(), stream.readline()] == [
        b"one\n",
        b"two\n",
        b"three",
    ]
    assert stream.readline() == b""


def test_readline_reads_whole_lines_from_small_pieces():
    stream = BodyStream(Trickle(b"first line\nsecond"), 17)

    assert stream.readline() == b"first line\n"
    assert stream.readline() == b"second"
    assert stream.readline() == b""


def test_readline_of_a_short_body_is_incomplete():
    stream = BodyStream(io.BytesIO(b"one\ntw"), 13)

    assert stream.readline() == b"one\n"
    with pytest.raises(BodyIncomplete):
        stream.readline()


def test_a_server_error_inside_a_chunked_body_is_incomplete():
    class Dropped(io.BytesIO):
        def read(self, size=-1, /):
            raise ConnectionResetError("reset by peer")

    stream = BodyStream(Dropped(), None)

    with pytest.raises(BodyIncomplete, match="last \\(zero-size\\) chunk"):
        stream.read(10)


def test_a_short_json_body_is_400_body_incomplete_and_stores_nothing(api_client):
    response = api_client.post(
        "/api/metrics/counter",
        content_type="application/json",
        CONTENT_LENGTH=str(len(BODY) + 1),
        **{"wsgi.input": io.BytesIO(BODY)},
    )

    assert_problem(response, 400, "body-incomplete", "cut off")
    assert not Metric.objects.exists()


def test_a_body_of_exactly_its_length_is_stored(api_client):
    response = api_client.post(
        "/api/metrics/counter",
        content_type="application/json",
        CONTENT_LENGTH=str(len(BODY)),
        **{"wsgi.input": io.BytesIO(BODY + b"trailing bytes of the next request")},
    )

    assert response.status_code == 201, response.content
    assert response.json()["value"] == 7


def test_a_short_form_outside_the_api_is_a_400_problem_not_a_500(client):
    form = b"username=admin&password=secret"

    response = client.post(
        "/admin/login/",
        content_type="application/x-www-form-urlencoded",
        CONTENT_LENGTH=str(len(form) + 10),
        **{"wsgi.input": io.BytesIO(form)},
    )

    assert_problem(response, 400, "body-incomplete")
