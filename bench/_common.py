"""Helpers shared by the benchmark scripts: a throwaway database, gunicorn, an API key, percentiles.

The scripts read DATABASE_URL and REDIS_URL (set by `make bench-*`, or by hand). They never touch
the database named there: each one creates its own next to it, migrates it and drops it at exit.
Nothing here imports Django, so the driving process stays free of settings and connections and
can fork client processes cleanly.
"""

from __future__ import annotations

import contextlib
import http.client
import math
import os
import platform
import re
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from glowing_fiesta.devstack import free_port

ROOT = Path(__file__).resolve().parent.parent
GUNICORN_CONF = ROOT / "deploy" / "gunicorn.conf.py"


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def required_env(name: str) -> str:
    value = os.environ.get(name, "").strip()
    if not value:
        raise SystemExit(f"bench: {name} must be set (or run through `make bench-…`)")
    return value


# --- database --------------------------------------------------------------------------------


def database_url_with_name(url: str, name: str) -> str:
    """The same server and credentials as `url`, another database (query string kept)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def _admin_connect(url: str):
    import psycopg

    # The maintenance database exists on every server; connecting to the target would block DROP.
    return psycopg.connect(database_url_with_name(url, "postgres"), autocommit=True)


def database_drop(url: str, name: str) -> None:
    with _admin_connect(url) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def scratch_database(url: str, name: str, env: Mapping[str, str]) -> Iterator[str]:
    """Create database `name` afresh on `url`'s server, migrate it, yield its URL, drop it after."""
    if not re.fullmatch(r"[a-z0-9_]+", name):
        raise ValueError(f"unsafe database name {name!r}")
    database_drop(url, name)
    with _admin_connect(url) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    scratch_url = database_url_with_name(url, name)
    try:
        manage({**env, "DATABASE_URL": scratch_url}, "migrate", "--no-input", "-v", "0")
        yield scratch_url
    finally:
        database_drop(url, name)


def server_version(url: str) -> str:
    import psycopg

    with psycopg.connect(url) as conn:
        return conn.execute("SHOW server_version").fetchone()[0].split()[0]


# --- processes -------------------------------------------------------------------------------


def service_env(database_url: str, redis_url: str, **extra: str) -> dict[str, str]:
    """A production-like environment: DEBUG off, freshly generated secrets, plain HTTP."""
    env = dict(os.environ)
    env.update(
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        DJANGO_DEBUG="false",
        DJANGO_SECRET_KEY=secrets.token_urlsafe(50),
        API_KEY_PEPPER=secrets.token_urlsafe(32),
        DJANGO_SETTINGS_MODULE="glowing_fiesta.settings",
        # Plain HTTP on loopback, as under `make run`: the figures are the service's, not TLS's.
        SECURE_SSL_REDIRECT="false",
    )
    env.update(extra)
    return env


def manage(env: Mapping[str, str], *args: str) -> str:
    """Run a management command; return its standard output."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), *args],
        env=dict(env),
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode:
        raise SystemExit(f"bench: manage.py {args[0]} failed:\n{result.stderr.strip()}")
    return result.stdout


def api_key_create(
    env: Mapping[str, str], *, name: str, rate_limit: int, scopes: str = "write,read"
) -> str:
    """Create an API key with `manage.py create_api_key` and return the raw key it prints."""
    out = manage(env, "create_api_key", name, "--rate-limit", str(rate_limit), "--scopes", scopes)
    # The raw key is printed alone on its line; other lines are prose.
    candidates = [
        line.strip() for line in out.splitlines() if re.fullmatch(r"\S{20,}", line.strip())
    ]
    if not candidates:
        raise SystemExit(f"bench: no key in the output of create_api_key:\n{out}")
    return candidates[-1]


@contextlib.contextmanager
def gunicorn(
    env: Mapping[str, str],
    *,
    workers: int,
    threads: int = 1,
    app: str = "glowing_fiesta.wsgi:application",
) -> Iterator[tuple[str, int]]:
    """Serve `app` with deploy/gunicorn.conf.py on a free loopback port; yield (host, port).

    Worker count, threads and bind are the only overrides, so the figures are those of the
    deployed configuration. The service's stdout (one JSON line per request) is discarded;
    stderr goes to a temporary file that is shown if start-up fails.
    """
    port = free_port()
    command = [
        sys.executable, "-m", "gunicorn", "-c", str(GUNICORN_CONF),
        "--bind", f"127.0.0.1:{port}",
        "--workers", str(workers),
        "--threads", str(threads),
        app,
    ]  # fmt: skip
    with tempfile.TemporaryFile("w+") as errors:
        process = subprocess.Popen(
            command, env=dict(env), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=errors
        )
        try:
            _wait_healthy("127.0.0.1", port, process, errors)
            yield "127.0.0.1", port
        finally:
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_healthy(host: str, port: int, process: subprocess.Popen, errors) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            conn = http.client.HTTPConnection(host, port, timeout=2)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                conn.close()
                return
        except OSError:
            time.sleep(0.1)
    errors.seek(0)
    raise SystemExit(f"bench: gunicorn did not become healthy:\n{errors.read()[-4000:]}")


# --- CPU by process --------------------------------------------------------------------------

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _process_kind(name: str, command: str) -> str:
    if "postgres" in name:
        return "postgres"
    if "redis" in name:
        return "redis"
    if "gunicorn" in command:
        return "gunicorn"
    if "celery" in command:
        return "celery"
    if "bench/" in command:
        return "clients"  # the benchmark's own processes: clients and in-process writers
    return "other"


def cpu_by_process() -> dict[int, tuple[str, float]]:
    """Every process's CPU seconds so far (user + system, from /proc), with its kind."""
    found: dict[int, tuple[str, float]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            command = Path(f"/proc/{entry}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue  # gone since the listing
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        seconds = (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
        found[int(entry)] = (_process_kind(name, command.replace("\0", " ")), seconds)
    return found


def cpu_used(before: dict, after: dict) -> dict[str, float]:
    """CPU seconds each kind of process used between two `cpu_by_process` readings; a process
    started in between counts from zero."""
    used: dict[str, float] = {}
    for pid, (kind, seconds) in after.items():
        used[kind] = used.get(kind, 0.0) + seconds - before.get(pid, (kind, 0.0))[1]
    return used


# --- figures ---------------------------------------------------------------------------------


def percentile(samples: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) by the nearest-rank method; NaN for no samples."""
    if not samples:
        return math.nan
    ordered = sorted(samples)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def machine_summary(database_url: str) -> str:
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{len(os.sched_getaffinity(0))} CPUs (nproc), {memory_gib:.0f} GiB RAM, Python {platform.python_version()}, "
        f"PostgreSQL {server_version(database_url)}"
    )
