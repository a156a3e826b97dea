"""Shared by every benchmark: the environment, a throwaway database, an API key, CPU by process,
percentiles.

The scripts read DATABASE_URL and REDIS_URL (set by `make bench-*`, or by hand). They never touch
the database named there: each one creates its own next to it, migrates it and drops it at exit.
Nothing here imports Django, so the driving process stays free of settings and connections and
can fork client processes cleanly.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import re
import secrets
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")


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


@contextlib.contextmanager
def own_queue(redis_url: str) -> Iterator[str]:
    """A Celery queue name of this run's own (a 202 never reaches another checkout's worker);
    its Redis list is deleted when the block ends."""
    queue = f"gf-bench-{uuid.uuid4().hex[:12]}"
    try:
        yield queue
    finally:
        with contextlib.suppress(Exception):
            import redis

            redis.Redis.from_url(redis_url).delete(queue)


# Batch states of a queued batch not yet written.
OPEN_STATES = ("pending", "running")


def queue_state(database_url: str) -> Counter[str]:
    """How many queued batches are in each state."""
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute("SELECT state, count(*) FROM ingest_batches GROUP BY 1").fetchall()
    return Counter(dict(rows))


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
    if "bench/" in command or "-m bench." in command:
        return "clients"  # the benchmark's own processes: clients and in-process writers
    return "other"


@dataclass(frozen=True)
class ProcessStat:
    name: str  # the executable's name, as ps shows it
    parent: int
    cpu_seconds: float  # user + system so far


def process_stat(pid: int) -> ProcessStat | None:
    """A process's line of /proc/<pid>/stat, or None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return ProcessStat(
        name=stat[stat.index("(") + 1 : stat.rindex(")")],
        parent=int(fields[1]),
        cpu_seconds=(int(fields[11]) + int(fields[12])) / _CLOCK_TICKS,
    )


def process_command(pid: int) -> bytes | None:
    """A process's command line (arguments separated by NUL bytes), or None once it is gone."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None


def process_ids() -> list[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


def cpu_by_process() -> dict[int, tuple[str, float]]:
    """Every process's CPU seconds so far (user + system, from /proc), with its kind."""
    found: dict[int, tuple[str, float]] = {}
    for pid in process_ids():
        stat, command = process_stat(pid), process_command(pid)
        if stat is None or command is None:
            continue  # gone since the listing
        kind = _process_kind(stat.name, command.decode(errors="replace").replace("\0", " "))
        found[pid] = (kind, stat.cpu_seconds)
    return found


def at_window_edges(window, read: Callable[[], T]) -> tuple[threading.Thread, dict[str, T]]:
    """Call `read` at `window`'s start and end (time.time() values), from a thread; the dict
    holds the two readings under "start" and "end" once the thread is joined."""
    readings: dict[str, T] = {}

    def run() -> None:
        time.sleep(max(0.0, window.start - time.time()))
        readings["start"] = read()
        time.sleep(max(0.0, window.end - time.time()))
        readings["end"] = read()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, readings


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
