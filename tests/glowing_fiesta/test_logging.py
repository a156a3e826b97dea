"""Log lines: stdout JSON by default, the same lines in LOG_FILE, reopened after logrotate moves
it; the request id and key prefix on every line of a request, never the key."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from glowing_fiesta.settings import _role_from_argv
from tests.helpers import wait_for
from tests.processes import ROOT

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def _lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


def test_log_file_gets_the_stdout_lines_and_survives_logrotate_moving_it(stack):
    log_file = stack.tmp_path / "service.log"
    # Every query is "slow": a warning line logged in the middle of the request.
    service = stack.serve(workers=1, LOG_FILE=str(log_file), QUERY_SLOW_MS="0")
    key = stack.write_key
    assert (
        service.request(
            "POST", "/api/metrics/counter", {"name": "logged"}, **{"X-API-Key": key}
        ).status
        == 201
    )
    response = service.request("GET", "/api/metrics/logged", Authorization=f"Bearer {key}")
    assert response.status == 200
    request_id = response.headers["X-Request-ID"]

    def slow_query_line():
        return [r for r in _lines(log_file) if r["message"] == "slow query"]

    [warning] = wait_for(slow_query_line, timeout=10, what="the warning in LOG_FILE")
    assert warning["level"] == "WARNING"
    assert warning["request_id"] == request_id
    assert warning["api_key_prefix"] == key[3:11]
    text = log_file.read_text()
    assert key not in text
    # The same JSON lines go to stdout.
    stdout = [r for r in _lines(service.stdout_path) if r.get("request_id") == request_id]
    assert {r["message"] for r in stdout} == {"slow query", "request"}
    access = next(r for r in stdout if r["message"] == "request")
    assert access["api_key_prefix"] == key[3:11]

    # logrotate renames the file; the next line goes to a new file of the same name.
    os.rename(log_file, stack.tmp_path / "service.log.1")
    anonymous = service.request("GET", "/api/metrics/logged")
    assert anonymous.status == 401
    wait_for(lambda: log_file.exists() and _lines(log_file), timeout=10, what="a new LOG_FILE")
    fresh = _lines(log_file)
    assert [r["request_id"] for r in fresh] == [anonymous.headers["X-Request-ID"]]
    # A request without a key does not inherit the previous request's prefix.
    assert "api_key_prefix" not in fresh[0]


@pytest.mark.parametrize(
    ("argv", "role"),
    [
        (["/opt/gf/.venv/bin/gunicorn", "-c", "deploy/gunicorn.conf.py"], "web"),
        (["/x/site-packages/gunicorn/__main__.py", "-c", "x"], "web"),
        (["manage.py", "runserver", "127.0.0.1:8000"], "web"),
        (["/x/site-packages/celery/__main__.py", "-A", "glowing_fiesta", "worker"], "worker"),
        (["/opt/gf/.venv/bin/celery", "-A", "glowing_fiesta", "beat"], "beat"),
        (["manage.py", "statsd"], "statsd"),
        (["manage.py", "apply_retention"], "cli"),
        (["/x/bin/pytest", "tests"], "cli"),
    ],
)
def test_process_role_is_told_from_the_command_line(argv, role):
    assert _role_from_argv(argv) == role


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("PROMETHEUS_MULTIPROC_DIR", "/nonexistent/prometheus"),
        ("LOG_FILE", "/nonexistent/dir/service.log"),
        ("PROCESS_ROLE", "scheduler"),
        ("SELF_METRICS_INTERVAL", "0"),
        ("SELF_METRICS_INTERVAL", "3601"),
        ("SELF_METRICS", "sometimes"),
    ],
)
def test_a_bad_monitoring_setting_stops_start_up_naming_it(variable, value):
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        env={**os.environ, "DJANGO_DEBUG": "true", "DJANGO_SETTINGS_MODULE": "glowing_fiesta.settings", variable: value},
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert variable in lines[0]


@pytest.mark.parametrize("interval", ["1", "3600"])
def test_self_metrics_interval_at_its_bounds_starts(interval):
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        env={**os.environ, "DJANGO_DEBUG": "true", "DJANGO_SETTINGS_MODULE": "glowing_fiesta.settings", "SELF_METRICS_INTERVAL": interval},
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert (result.returncode, result.stderr) == (0, "")
