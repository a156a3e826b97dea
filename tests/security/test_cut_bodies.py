"""A body cut off before its end is refused (400) and nothing of it is stored, on every write
endpoint: over raw sockets against a live gunicorn, and through nginx with deploy/nginx/'s
configuration in front.

A cut-off upload is what a flaky network makes of a request: the headers declare the whole
body, fewer bytes arrive, the connection closes (here `shutdown(SHUT_WR)`, so the answer can
still be read). The bodies sent are whole and valid where that is possible, a few bytes short of
their Content-Length: accepting them would store exactly what was sent, so only the check of
the length refuses them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cramjam
import pytest
from google.protobuf import json_format
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)

from glowing_fiesta.devstack import free_port
from glowing_fiesta.exceptions import PROBLEM_CONTENT_TYPE, TYPE_PREFIX
from metrics.models import Metric, MetricPoint
from protocols.prometheus_pb import WriteRequest
from tests.security.conftest import ROOT, Server

pytestmark = [pytest.mark.server, pytest.mark.django_db(transaction=True)]

NGINX_CONF = ROOT / "deploy" / "nginx" / "glowing-fiesta.conf"


@dataclass
class Answer:
    status: int | None  # None: the connection closed without an answer
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    def json(self) -> dict:
        return json.loads(self.body)


def exchange(host: str, port: int, raw: bytes, *, cut: bool = True, timeout: float = 30) -> Answer:
    """Send `raw`, close the sending side as a dropped upload does (unless not `cut`), read the
    answer to EOF."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(raw)
        if cut:
            sock.shutdown(socket.SHUT_WR)
        received = bytearray()
        try:
            while data := sock.recv(65536):
                received += data
        except ConnectionResetError:
            pass
    if not received:
        return Answer(None)
    head, _, body = bytes(received).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        body = body[: int(headers["content-length"])]
    elif headers.get("transfer-encoding") == "chunked":
        body = _dechunk(body)
    return Answer(int(lines[0].split()[1]), headers, body)


def _dechunk(data: bytes) -> bytes:
    out = bytearray()
    while True:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if not size:
            return bytes(out)
        out += data[:size]
        data = data[size + 2 :]


@dataclass(frozen=True)
class Endpoint:
    """One write endpoint: how to send a body to it, what it answers when it stores it."""

    id: str
    path: str
    content_type: str
    body: Callable[[str], bytes]  # the metric name -> a whole, valid body storing one point
    stored_status: int
    headers: tuple[tuple[str, str], ...] = ()
    # A body cut where what arrived still parses: the first of two points.
    cut: Callable[[str], tuple[bytes, bytes]] | None = None

    def head(self, host: str, key: str, *, length: int | None, **extra: str) -> bytes:
        """The request line and headers; Content-Length `length`, or chunked when None."""
        headers = {
            "Host": host,
            "X-API-Key": key,
            "X-Forwarded-Proto": "https",
            "Content-Type": self.content_type,
            "Connection": "close",
            **dict(self.headers),
            **extra,
        }
        if length is None:
            headers["Transfer-Encoding"] = "chunked"
        else:
            headers["Content-Length"] = str(length)
        lines = [f"POST {self.path} HTTP/1.1", *(f"{k}: {v}" for k, v in headers.items())]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _json(body: dict) -> bytes:
    return json.dumps(body).encode()


def _point(name: str, kind: str = "value") -> dict:
    return {"type": kind, "name": name, "value": 12345, "timestamp": time.time() - 60}


def _lines(name: str) -> bytes:
    return f"{name} value=12345\n".encode()


def _lines_cut(name: str) -> tuple[bytes, bytes]:
    # The second line is cut inside its value: what arrived says 123, the client sent 12345.
    whole = f"{name} value=1\n{name}.more value=12345\n".encode()
    return whole, whole[: whole.index(b"=12345") + 4]


def _otlp(name: str, *resources: str) -> dict:
    now = str(time.time_ns())
    return {
        "resourceMetrics": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": service}}]
                },
                "scopeMetrics": [
                    {
                        "scope": {"name": "lib"},
                        "metrics": [
                            {
                                "name": name,
                                "gauge": {"dataPoints": [{"asDouble": 12345, "timeUnixNano": now}]},
                            }
                        ],
                    }
                ],
            }
            for service in resources or ("checkout",)
        ]
    }


def _otlp_protobuf(name: str, *resources: str) -> bytes:
    message = json_format.ParseDict(_otlp(name, *resources), ExportMetricsServiceRequest())
    return message.SerializeToString()


def _otlp_protobuf_cut(name: str) -> tuple[bytes, bytes]:
    # Two resource blocks declared, the first sent: a valid export of its own.
    return _otlp_protobuf(name, "first", "second"), _otlp_protobuf(name, "first")


def _remote_write(name: str) -> bytes:
    request = WriteRequest()
    series = request.timeseries.add()
    series.labels.add(name="__name__", value=name)
    series.labels.add(name="job", value="cut")
    series.samples.add(value=12345, timestamp=int(time.time() * 1000))
    return bytes(cramjam.snappy.compress_raw(request.SerializeToString()))


ENDPOINTS = [
    Endpoint(
        "counter", "/api/metrics/counter", "application/json",
        lambda n: _json({"name": n, "value": 12345}), 201,
    ),
    Endpoint(
        "value", "/api/metrics/value", "application/json",
        lambda n: _json({"name": n, "value": 12345}), 201,
    ),
    Endpoint(
        "batch", "/api/metrics/batch", "application/json",
        lambda n: _json({"points": [_point(n)]}), 201,
    ),
    Endpoint(
        "influx-v2", "/api/v2/write?org=o&bucket=b", "text/plain; charset=utf-8", _lines, 204,
        cut=_lines_cut,
    ),
    Endpoint("influx-v1", "/write?db=d", "text/plain", _lines, 204, cut=_lines_cut),
    Endpoint(
        "otlp-protobuf", "/v1/metrics", "application/x-protobuf", _otlp_protobuf, 200,
        cut=_otlp_protobuf_cut,
    ),
    Endpoint("otlp-json", "/v1/metrics", "application/json", lambda n: _json(_otlp(n)), 200),
    Endpoint(
        "remote-write", "/api/v1/write", "application/x-protobuf", _remote_write, 204,
        headers=(("Content-Encoding", "snappy"), ("X-Prometheus-Remote-Write-Version", "0.1.0")),
    ),
]  # fmt: skip


def _name(endpoint: Endpoint) -> str:
    return "cut_" + endpoint.id.replace("-", "_")


def send(
    server,
    endpoint: Endpoint,
    key: str,
    payload: bytes,
    *,
    length: int | None,
    cut: bool = True,
    **headers: str,
) -> Answer:
    """`endpoint`'s request head declaring `length` (None: chunked) and `headers`, then
    `payload`, sent to `server` (gunicorn or nginx, by its host and port) with `exchange`."""
    head = endpoint.head(f"{server.host}:{server.port}", key, length=length, **headers)
    return exchange(server.host, server.port, head + payload, cut=cut)


def stored(name: str) -> list[float]:
    """The values stored under metrics whose names start with `name`."""
    return sorted(
        MetricPoint.objects.filter(metric__name__startswith=name).values_list("value", flat=True)
    )


def assert_refused(endpoint: Endpoint, answer: Answer) -> None:
    """400, in the endpoint's error shape, saying the upload was cut off."""
    assert answer.status == 400, answer
    assert b"cut off" in answer.body, answer
    if answer.headers.get("content-type") == PROBLEM_CONTENT_TYPE:
        assert answer.json()["type"] == TYPE_PREFIX + "body-incomplete"


def chunked(body: bytes, *, last: bool) -> bytes:
    """`body` as two chunks, with the last (zero-size) chunk or without it."""
    half = len(body) // 2
    out = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:half], body[half:]))
    return out + (b"0\r\n\r\n" if last else b"")


@pytest.fixture
def key(api_key) -> str:
    return api_key[1]


# --- a live gunicorn -------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=lambda e: e.id)
def test_the_whole_body_is_stored(gunicorn_server: Server, key, endpoint):
    name = _name(endpoint)
    body = endpoint.body(name)

    answer = send(gunicorn_server, endpoint, key, body, length=len(body))

    assert answer.status == endpoint.stored_status, answer
    assert stored(name) == [12345]


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=lambda e: e.id)
def test_a_body_shorter_than_its_content_length_is_refused_and_nothing_stored(
    gunicorn_server: Server, key, endpoint
):
    name = _name(endpoint)
    body = endpoint.body(name)

    answer = send(gunicorn_server, endpoint, key, body, length=len(body) + 5)

    assert_refused(endpoint, answer)
    assert stored(name) == []
    assert not Metric.objects.filter(name__startswith=name).exists()


@pytest.mark.parametrize("endpoint", [e for e in ENDPOINTS if e.cut], ids=lambda e: e.id)
def test_a_body_cut_where_it_still_parses_is_refused(gunicorn_server: Server, key, endpoint):
    name = _name(endpoint)
    whole, arrived = endpoint.cut(name)

    answer = send(gunicorn_server, endpoint, key, arrived, length=len(whole))

    assert_refused(endpoint, answer)
    assert stored(name) == []


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=lambda e: e.id)
def test_a_chunked_body_without_its_last_chunk_is_refused(gunicorn_server: Server, key, endpoint):
    name = _name(endpoint)
    body = endpoint.body(name)

    cut = send(gunicorn_server, endpoint, key, chunked(body, last=False), length=None)

    assert_refused(endpoint, cut)
    assert stored(name) == []
    whole = send(gunicorn_server, endpoint, key, chunked(body, last=True), length=None)
    assert whole.status == endpoint.stored_status, whole
    assert stored(name) == [12345]


def test_a_cut_body_leaves_its_idempotency_key_free_for_the_retry(gunicorn_server: Server, key):
    endpoint = ENDPOINTS[0]
    body = endpoint.body("cut_retry")
    retry_key = {"Idempotency-Key": "cut-retry-1"}

    cut = send(gunicorn_server, endpoint, key, body[:-3], length=len(body), **retry_key)
    retry = send(gunicorn_server, endpoint, key, body, length=len(body), **retry_key)

    assert_refused(endpoint, cut)
    assert retry.status == 201, retry
    assert "idempotent-replayed" not in retry.headers
    assert stored("cut_retry") == [12345]


def test_a_malformed_chunk_is_a_400_not_a_500(gunicorn_server: Server, key):
    endpoint = ENDPOINTS[0]

    answer = send(gunicorn_server, endpoint, key, b"zz\r\n{}\r\n0\r\n\r\n", length=None)

    assert answer.status == 400, answer
    assert answer.headers["content-type"] == PROBLEM_CONTENT_TYPE
    assert "chunked body is malformed" in answer.json()["detail"]


# --- nginx in front --------------------------------------------------------------------------


def nginx_conf_render(directory: Path, *, listen: int, upstream: int) -> Path:
    """deploy/nginx/glowing-fiesta.conf for a private nginx: its upstream block and its TLS
    server, that server listening on loopback in plain HTTP (TLS is not under test; the proxy
    header still says https, as it would), and the proxy settings from the file's own comment;
    the rest of nginx's configuration (pid, logs, temporary files) in `directory`."""
    text = NGINX_CONF.read_text()
    proxy = [
        line.removeprefix("#   ")
        for line in text.splitlines()
        if line.startswith("#   proxy_") or line.startswith("#   # ")
    ]
    proxy_file = directory / "proxy.conf"
    proxy_file.write_text(
        "\n".join(proxy).replace("X-Forwarded-Proto $scheme", "X-Forwarded-Proto https") + "\n"
    )
    upstream_block = re.search(r"^upstream .*?^}", text, re.S | re.M).group(0)
    upstream_block = upstream_block.replace("127.0.0.1:8000", f"127.0.0.1:{upstream}")
    servers = re.findall(r"^server \{.*?^}", text, re.S | re.M)
    tls = next(s for s in servers if "listen 443" in s)
    kept = []
    for line in tls.splitlines():
        stripped = line.strip()
        if stripped.startswith(("ssl_", "listen [::]")):
            continue
        if stripped.startswith("listen 443"):
            line = f"    listen 127.0.0.1:{listen};"
        kept.append(line.replace("/etc/nginx/glowing-fiesta-proxy.conf", str(proxy_file)))
    user = "user root;\n" if os.geteuid() == 0 else ""
    conf = directory / "nginx.conf"
    conf.write_text(
        f"{user}daemon off;\nworker_processes 1;\npid {directory}/nginx.pid;\n"
        f"error_log {directory}/error.log info;\nevents {{ worker_connections 64; }}\n"
        f"http {{\n  access_log {directory}/access.log;\n"
        + "".join(
            f"  {kind}_temp_path {directory}/{kind};\n"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        + upstream_block
        + "\n"
        + "\n".join(kept)
        + "\n}\n"
    )
    return conf


@dataclass
class Nginx:
    host: str
    port: int
    directory: Path

    def error_log(self) -> str:
        return (self.directory / "error.log").read_text(errors="replace")


@pytest.fixture
def nginx(gunicorn_server: Server, tmp_path: Path) -> Iterator[Nginx]:
    binary = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )
    if binary is None:
        pytest.skip("nginx is not installed")
    directory = tmp_path / "nginx"
    directory.mkdir()
    port = free_port()
    conf = nginx_conf_render(directory, listen=port, upstream=gunicorn_server.port)
    process = subprocess.Popen(  # noqa: S603 - a fixed binary and our own configuration
        [binary, "-p", str(directory), "-c", str(conf), "-e", str(directory / "error.log")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    proxy = Nginx("127.0.0.1", port, directory)
    deadline = time.monotonic() + 15
    while True:
        if process.poll() is not None:
            pytest.fail(f"nginx exited with {process.returncode}:\n{proxy.error_log()}")
        try:
            socket.create_connection((proxy.host, port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                pytest.fail(f"nginx did not listen in 15 s:\n{proxy.error_log()}")
            time.sleep(0.05)
    yield proxy
    process.terminate()
    process.wait(10)


def requests_served(server: Server, path: str) -> int:
    """How many requests for `path` the service answered (its access log lines)."""
    count = 0
    for line in server.log().splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            count += record.get("message") == "request" and record.get("path") == path
    return count


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=lambda e: e.id)
def test_behind_nginx_a_cut_off_upload_never_reaches_the_service(
    nginx: Nginx, gunicorn_server: Server, key, endpoint
):
    name = _name(endpoint)
    body = endpoint.body(name)
    path = endpoint.path.partition("?")[0]

    short = send(nginx, endpoint, key, body, length=len(body) + 5)
    unended = send(nginx, endpoint, key, chunked(body, last=False), length=None)

    for answer in (short, unended):
        assert answer.status in (None, 400, 408), answer
    assert nginx.error_log().count("client prematurely closed connection") == 2
    assert requests_served(gunicorn_server, path) == 0
    assert stored(name) == []
    # A client that closes its sending side is gone for nginx, whole body or not: the control
    # keeps it open until the answer.
    whole = send(nginx, endpoint, key, body, length=len(body), cut=False)
    assert whole.status == endpoint.stored_status, whole
    assert requests_served(gunicorn_server, path) == 1
    assert stored(name) == [12345]
