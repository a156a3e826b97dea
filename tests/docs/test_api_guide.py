"""docs/API.md runs: every example, in its own language, against a live service.

One gunicorn (plain HTTP on loopback, as `make run` serves), one Celery worker and one StatsD
listener serve the whole module, on the test database; each example gets a new API key holding
every scope.
Each example is a subprocess (bash with curl and jq, this interpreter for Python, node, php) with
GF_URL, GF_API_KEY, GF_STATSD_HOST and GF_STATSD_PORT in its environment; it must exit 0 and
print its output block's lines. Each one starts from an empty store (metrics, series, points,
batches and Idempotency-Keys are emptied first), so the examples are self-contained: each writes
what it reads, and the outputs in the guide are what a reader sees on a fresh service.

The last tests check that the guide is complete: every section has an example in each of the
four languages doing the same requests, and every named URL pattern is called by at least one
example of each language (the routes are read from the server's own request log).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection
from django.urls import URLPattern, URLResolver, get_resolver, resolve
from django.urls.exceptions import Resolver404

from apikeys.services import apikey_create
from glowing_fiesta.devstack import PLAIN_HTTP, free_port, wait_or_kill
from tests.docs.guide import LANGUAGES, Example, examples_read, files_read, missing_lines
from tests.helpers import POINT_TABLES
from tests.processes import worker_database_url

# Transactional: the key each example uses is committed, so the server's processes see it. The
# flush after each test empties only the keys' tables (api_keys, and by cascade the batches and
# Idempotency-Keys that refer to them); the examples' metrics are emptied before each example.
pytestmark = [
    pytest.mark.server,
    pytest.mark.django_db(transaction=True, available_apps=["apikeys"]),
]

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "API.md"
EXAMPLES = examples_read(GUIDE)
FILES = files_read(GUIDE)
# Every call of these chapters is shown in all four languages; "From your existing tools" runs
# the Python clients only.
FOUR_LANGUAGE_CHAPTERS = {"Endpoints", "Error handling"}
START_SECONDS = 60
EXAMPLE_SECONDS = 30
# Pages for people (the admin, the API docs and schema) are not API calls to give examples of.
UNDOCUMENTED_ROUTES = {"admin-login", "schema", "docs", "redoc"}
# What examples write: emptied when the module starts and ends.
STORE_TABLES = ("metrics", "series", *POINT_TABLES, "ingest_batches", "idempotency_keys",
                "cumulative_streams")  # fmt: skip
COMMANDS = {
    "bash": ["bash", "-euo", "pipefail"],
    "python": [sys.executable],
    "js": ["node"],
    "php": ["php"],
}
SUFFIXES = {"bash": ".sh", "python": ".py", "js": ".mjs", "php": ".php"}
TOOLS = {"bash": ("bash", "curl", "jq"), "python": (), "js": ("node",), "php": ("php",)}


@dataclass
class Service:
    url: str
    statsd_port: int
    log_path: Path
    processes: list[subprocess.Popen] = field(default_factory=list)
    # What each example called: example id -> {(method, route name)}.
    calls: dict[str, set[tuple[str, str]]] = field(default_factory=dict)

    def log_size(self) -> int:
        return self.log_path.stat().st_size

    def requests_since(self, offset: int) -> list[dict]:
        with self.log_path.open("rb") as log:
            log.seek(offset)
            text = log.read().decode(errors="replace")
        records = []
        for line in text.splitlines():
            if line.startswith("{"):
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if record.get("message") == "request":
                    records.append(record)
        return records


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _route(path: str) -> str:
    try:
        match = resolve(path)
    except Resolver404:
        return "unmatched"
    return match.view_name


def _wait(what: str, ready, process: subprocess.Popen, log_path: Path) -> None:
    deadline = time.monotonic() + START_SECONDS
    while not ready():
        if process.poll() is not None:
            pytest.fail(f"{what} exited with {process.returncode}:\n{log_path.read_text()}")
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not start in {START_SECONDS} s:\n{log_path.read_text()}")
        time.sleep(0.1)


def _store_empty() -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {', '.join(STORE_TABLES)}")


def _metrics_empty() -> None:
    """What the previous example wrote; DELETE, as the few rows go faster than a TRUNCATE."""
    with connection.cursor() as cursor:
        for table in (*POINT_TABLES, "cumulative_streams", "series", "metrics"):
            cursor.execute(f"DELETE FROM {table}")


@pytest.fixture(scope="module")
def service(django_db_setup, django_db_blocker) -> Iterator[Service]:
    """gunicorn, a Celery worker and `manage.py statsd` on the test database, and a key."""
    workdir = Path(tempfile.mkdtemp(prefix="api-guide-"))
    multiproc = workdir / "prometheus"
    multiproc.mkdir()
    port, statsd_port = free_port(), free_udp_port()
    queue = f"gf-guide-{uuid.uuid4().hex[:12]}"
    env = {
        **os.environ,
        **PLAIN_HTTP,
        "DATABASE_URL": worker_database_url(),
        "REDIS_URL": settings.REDIS_URL,
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "CELERY_QUEUE": queue,
        "DJANGO_DEBUG": "false",
        "DJANGO_SETTINGS_MODULE": "glowing_fiesta.settings",
        # The service's own figures would show up among the examples' metrics.
        "SELF_METRICS": "false",
        "PROMETHEUS_MULTIPROC_DIR": str(multiproc),
        "STATSD_BIND": f"127.0.0.1:{statsd_port}",
        "STATSD_FLUSH_SECONDS": "1",
    }
    commands = {
        "gunicorn": [
            sys.executable, "-m", "gunicorn", "-c", str(ROOT / "deploy" / "gunicorn.conf.py"),
            "--bind", f"127.0.0.1:{port}", "--workers", "2",
        ],
        "worker": [
            sys.executable, "-m", "celery", "-A", "glowing_fiesta", "worker",
            "--pool", "solo", "-Q", queue, "-n", f"{queue}@%h",
            "--without-gossip", "--without-mingle", "--without-heartbeat", "--loglevel", "INFO",
        ],
        "statsd": [sys.executable, str(ROOT / "manage.py"), "statsd"],
    }  # fmt: skip
    logs = {name: workdir / f"{name}.log" for name in commands}
    processes = {}
    for name, command in commands.items():
        with logs[name].open("w") as log_file:
            processes[name] = subprocess.Popen(  # noqa: S603 - our own interpreter and modules
                command, env=env, cwd=ROOT, stdout=log_file, stderr=subprocess.STDOUT
            )
    service = Service(
        url=f"http://127.0.0.1:{port}",
        statsd_port=statsd_port,
        log_path=logs["gunicorn"],
        processes=list(processes.values()),
    )
    try:
        import http.client

        def web_ready() -> bool:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("GET", "/healthz")
                return conn.getresponse().status == 200
            except OSError:
                return False

        _wait("gunicorn", web_ready, processes["gunicorn"], logs["gunicorn"])
        _wait("the worker", lambda: " ready." in logs["worker"].read_text(),
              processes["worker"], logs["worker"])  # fmt: skip
        _wait("statsd", lambda: "statsd listening" in logs["statsd"].read_text(),
              processes["statsd"], logs["statsd"])  # fmt: skip
        yield service
    finally:
        # Fast stops: gunicorn's SIGINT and Celery's SIGQUIT do not wait for idle workers.
        processes["gunicorn"].send_signal(signal.SIGINT)
        processes["worker"].send_signal(signal.SIGQUIT)
        processes["statsd"].terminate()
        for process in processes.values():
            wait_or_kill(process, 20)
        with django_db_blocker.unblock():
            _store_empty()
        shutil.rmtree(workdir, ignore_errors=True)


def _php_curl() -> bool:
    """PHP's curl extension, which the PHP examples use (Debian's php-curl)."""
    check = [shutil.which("php") or "php", "-r", "exit(extension_loaded('curl') ? 0 : 1);"]
    return subprocess.run(check, capture_output=True, check=False).returncode == 0  # noqa: S603


def _tools_or_skip(language: str) -> None:
    missing = [tool for tool in TOOLS[language] if shutil.which(tool) is None]
    if language == "php" and not missing and not _php_curl():
        missing.append("php-curl")
    if not missing:
        return
    reason = f"{', '.join(missing)} not installed (.ci/run installs it)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}: the {language} examples of docs/API.md must run in CI")
    pytest.skip(reason)


def _run(
    example: Example, service: Service, key: str, tmp_path: Path
) -> subprocess.CompletedProcess:
    for name, text in FILES.items():
        (tmp_path / name).write_text(text)
    script = tmp_path / f"example{SUFFIXES[example.language]}"
    script.write_text(example.code)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "LANG": "C.UTF-8",
        "GF_URL": service.url,
        "GF_API_KEY": key,
        "GF_STATSD_HOST": "127.0.0.1",
        "GF_STATSD_PORT": str(service.statsd_port),
    }
    return subprocess.run(  # noqa: S603 - the guide's own examples
        [*COMMANDS[example.language], str(script)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=EXAMPLE_SECONDS,
        check=False,
    )


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.id for e in EXAMPLES])
def test_example_runs_and_prints_what_the_guide_says(
    example: Example, service: Service, tmp_path: Path
):
    _tools_or_skip(example.language)
    _metrics_empty()
    _, key = apikey_create(name="api-guide", scopes=["read", "write", "admin"], rate_limit=10_000)
    offset = service.log_size()

    result = _run(example, service, key, tmp_path)

    service.calls[example.id] = {
        (r["method"], _route(r["path"])) for r in service.requests_since(offset)
    }
    where = f"docs/API.md line {example.line} ({example.section}, {example.language})"
    assert result.returncode == 0, (
        f"{where} exited {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n"
        f"{result.stderr}"
    )
    missing = missing_lines(example.expected, result.stdout)
    assert not missing, (
        f"{where} did not print {missing}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
    )


def test_every_section_has_an_example_in_each_language():
    sections: dict[str, set[str]] = {}
    chapters = {e.chapter for e in EXAMPLES}
    assert chapters >= FOUR_LANGUAGE_CHAPTERS
    for example in EXAMPLES:
        if example.chapter not in FOUR_LANGUAGE_CHAPTERS:
            continue
        sections.setdefault(example.section, set()).add(example.language)
    incomplete = {s: sorted(set(LANGUAGES) - langs) for s, langs in sections.items()}
    assert not {s: m for s, m in incomplete.items() if m}


def _route_names(patterns=None, prefix: str = "") -> set[str]:
    names = set()
    for pattern in patterns if patterns is not None else get_resolver().url_patterns:
        if isinstance(pattern, URLResolver):
            if pattern.namespace:  # the admin site
                continue
            names |= _route_names(pattern.url_patterns)
        elif isinstance(pattern, URLPattern) and pattern.name:
            names.add(pattern.name)
    return names


def _calls_or_skip(service: Service) -> dict[str, set[tuple[str, str]]]:
    not_run = [e.id for e in EXAMPLES if e.id not in service.calls]
    if not_run:
        pytest.skip(f"needs every example run first; not run: {not_run[:5]}")
    return service.calls


def test_the_four_languages_of_a_section_make_the_same_calls(service: Service):
    calls = _calls_or_skip(service)
    by_section: dict[str, dict[str, set]] = {}
    for example in EXAMPLES:
        if example.chapter not in FOUR_LANGUAGE_CHAPTERS:
            continue
        by_section.setdefault(example.section, {})[example.language] = calls[example.id]
    differing = {
        section: langs
        for section, langs in by_section.items()
        if len({frozenset(calls) for calls in langs.values()}) > 1
    }
    assert not differing


def test_every_route_is_called_by_an_example_in_each_language(service: Service):
    calls = _calls_or_skip(service)
    routes = _route_names() - UNDOCUMENTED_ROUTES
    for language in LANGUAGES:
        called = {
            name
            for example in EXAMPLES
            if example.language == language
            for _, name in calls[example.id]
        }
        assert routes <= called, f"{language}: no example calls {sorted(routes - called)}"
