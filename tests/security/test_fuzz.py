"""schemathesis against a live gunicorn, from the service's own OpenAPI schema, all checks on.

Three runs: a read+write key through the coverage and fuzzing phases (boundaries of every
parameter, then random valid and invalid requests), then a read-only key and no key at all
(fuzzing: every write must be refused with 403, every call without a key with 401). Any failure
(a 5xx, a response or status the schema does not document, a valid request refused, an invalid
one accepted) fails the test with schemathesis' report.

Whatever the fuzzer writes lands in the test database and is removed at teardown: the metrics,
keys and batches by pytest-django's flush, the points and rollups by `clean_point_tables`.
The rules no JSON Schema can state are kept by tests/security/schemathesis_hooks.py.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from apikeys.services import apikey_create
from tests.security.conftest import ROOT, Server

pytestmark = [pytest.mark.fuzz, pytest.mark.server]

HOOKS = "tests.security.schemathesis_hooks"


def _schemathesis(
    server: Server,
    tmp_path,
    name: str,
    *,
    key: str | None,
    phases: str,
    examples: int,
    timeout: int,
) -> None:
    config = tmp_path / f"{name}.toml"
    config.write_text(
        (f'[auth.openapi.ApiKeyAuth]\napi_key = "{key}"\n' if key else "")
        # GET on counter, value and batch is GET /api/metrics/{name} for those names: its
        # boundaries (every time zone, each enum) are enumerated once, there.
        + "[[operations]]\n"
        + 'include-operation-id-regex = "^metrics_query_(counter|value|batch)$"\n'
        + "phases.coverage.enabled = false\n"
    )
    command = [
        sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "--no-color",
        "run", f"{server.url}/api/schema/?format=json",
        # The service requires HTTPS; here the "proxy" says the call came over TLS.
        "--header", "X-Forwarded-Proto: https",
        "--checks", "all", "--phases", phases, "--max-examples", str(examples),
        "--workers", "2", "--seed", "1", "--request-timeout", "10",
        "--report", "junit", "--report-dir", str(tmp_path / f"{name}-report"),
        # OTLP and remote write take protobuf messages, and the InfluxDB endpoints line protocol,
        # which JSON Schema cannot describe (a fuzzer's random text is rightly a 400); their own
        # tests drive them with the real OpenTelemetry SDK, remote-write encoder and
        # influxdb-client.
        "--exclude-path", "/v1/metrics", "--exclude-path", "/api/v1/write",
        "--exclude-path", "/api/v2/write", "--exclude-path", "/write",
    ]  # fmt: skip
    env = {"PYTHONPATH": str(ROOT), "SCHEMATHESIS_HOOKS": HOOKS, "PATH": "/usr/bin:/bin"}
    result = subprocess.run(  # noqa: S603 - our own interpreter and arguments
        command,
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"schemathesis ({name}) failed:\n{output[-20000:]}"
    counts = re.search(r"(\d+) generated, (\d+) passed", output)
    assert counts, output[-5000:]
    generated, passed = map(int, counts.groups())
    assert generated == passed > 0, output[-5000:]


def test_schemathesis_finds_nothing_with_a_read_write_key_a_read_only_key_and_none(
    start_gunicorn, tmp_path
):
    # Fuzzed tag sets would reach the per-metric series limit of the popular names ("0"); that
    # 422 is tested on its own (tests/metrics), and here it would only stop valid writes.
    # schemathesis' ignored_auth check sends wrong keys on purpose; counted at the production
    # rate they would lock this address out of the servers of the next tests (Redis is shared,
    # and so is 127.0.0.1). The failure limit has its own tests (test_bruteforce.py).
    server = start_gunicorn(METRIC_MAX_SERIES="1000000", AUTH_FAILURE_RATE="1000000/minute")
    _, read_write = apikey_create(name="fuzz-rw", scopes=["read", "write"], rate_limit=10**7)
    _, read_only = apikey_create(name="fuzz-ro", scopes=["read"], rate_limit=10**7)
    _schemathesis(
        server, tmp_path, "read-write", key=read_write, phases="coverage,fuzzing", examples=50,
        timeout=240,
    )  # fmt: skip
    _schemathesis(
        server, tmp_path, "read-only", key=read_only, phases="fuzzing", examples=30, timeout=120
    )
    _schemathesis(server, tmp_path, "no-key", key=None, phases="fuzzing", examples=30, timeout=120)
