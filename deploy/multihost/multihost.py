"""Glowing Fiesta on several hosts, each host a Linux network namespace on one machine.

    deploy/multihost/up   [--prefix gfmh] [--dir /tmp/gfmh] [--net 10.231.0]
    deploy/multihost/down [--prefix gfmh] [--dir /tmp/gfmh]
    python deploy/multihost/multihost.py start|kill HOST [--prefix ...] [--dir ...]

`up` builds, from the project's own files, the hosts of a small installation: `lb` (Debian's nginx
configured from deploy/nginx/glowing-fiesta.conf with web1 and web2 as its upstreams), `web1` and
`web2` (gunicorn with deploy/gunicorn.conf.py, each with its own PROMETHEUS_MULTIPROC_DIR and its
own `manage.py statsd` listener), `worker` (a Celery worker and beat), `db1` (a PostgreSQL primary,
initdb in DIR, and Debian's PgBouncer in transaction mode in front of it, which DATABASE_URL
names; migrations go to PostgreSQL directly), `db2` (its streaming replica, `pg_basebackup -R`), `redis` (a redis-server) and
`mq` (a RabbitMQ node of its own: the machine's node on 127.0.0.1 is reachable from no namespace,
and a node inside `mq` can be stopped and restarted without touching anything else). The hosts
share one bridge, PREFIX-br in the root namespace with NET.1/24, so this machine reaches `lb` at
NET.10 as a client would. Every host reads the same environment file, DIR/glowing-fiesta.env
(printed by `up`), which is the one a real host's systemd units read (deploy/systemd/).

`down` kills every process of every PREFIX- namespace, deletes the namespaces and the bridge,
and removes DIR: it works from the names alone, so it cleans up after an `up` that failed half
way. Nothing here touches the machine's own PostgreSQL, Redis, RabbitMQ or nginx. Needs root.

`kill HOST` SIGKILLs every process of one host (a host lost at once); `start HOST` starts its
processes again (`db2` from its data directory, `web1` gunicorn and its StatsD listener, ...).
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HOSTS = {
    "lb": 10,
    "web1": 11,
    "web2": 12,
    "worker": 13,
    "db1": 21,
    "db2": 22,
    "redis": 31,
    "mq": 32,
}
DB_NAME = "gf"
START_SECONDS = 90
RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")
IP = shutil.which("ip") or "/usr/sbin/ip"  # iproute2
# Longer than the longest hard task time limit (CELERY_TASK_TIME_LIMIT, 30 minutes): an
# unacknowledged delivery is never taken back from a task still running.
RABBITMQ_CONF = "loopback_users = none\nconsumer_timeout = 3600000\nlog.console = false\n"


class Topology:
    def __init__(self, prefix: str, directory: Path, net: str) -> None:
        self.prefix = prefix
        self.dir = directory
        self.net = net
        self.bridge = f"{prefix}-br"

    # --- names and addresses -------------------------------------------------------------

    def ns(self, host: str) -> str:
        return f"{self.prefix}-{host}"

    def ip(self, host: str) -> str:
        return f"{self.net}.{HOSTS[host]}"

    @property
    def env_file(self) -> Path:
        return self.dir / "glowing-fiesta.env"

    def env(self) -> dict[str, str]:
        """The environment file's variables, as every application process gets them."""
        values = {}
        for line in self.env_file.read_text().splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.partition("=")
                values[name] = value
        return values

    # --- running things ------------------------------------------------------------------

    def run(self, host: str | None, argv: list[str], **kwargs) -> subprocess.CompletedProcess:
        prefix = [IP, "netns", "exec", self.ns(host)] if host else []
        kwargs.setdefault("check", True)
        kwargs.setdefault("capture_output", True)
        kwargs.setdefault("text", True)
        try:
            return subprocess.run([*prefix, *argv], **kwargs)  # noqa: S603 - our own arguments
        except subprocess.CalledProcessError as exc:
            raise RuntimeError(f"{' '.join(argv)} failed:\n{exc.stdout}{exc.stderr}") from exc

    def spawn(self, host: str, name: str, argv: list[str], env: dict[str, str] | None = None):
        """Start a long-running process on `host`, detached, logging to DIR/logs/NAME.log."""
        log = self.dir / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("a") as out:
            subprocess.Popen(  # noqa: S603 - our own arguments
                [IP, "netns", "exec", self.ns(host), *argv],
                env={**os.environ, **(env or {})}, cwd=ROOT, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip

    def pids(self, host: str) -> list[int]:
        result = self.run(None, [IP, "netns", "pids", self.ns(host)], check=False)
        return [int(p) for p in result.stdout.split()]

    def kill(self, host: str) -> None:
        """SIGKILL every process of the host, as if it lost power."""
        for _ in range(20):
            pids = self.pids(host)
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)

    def wait(self, what: str, check, timeout: float = START_SECONDS) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if check():
                    return
            except Exception:  # noqa: S110 - not up yet
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{what} did not come up in {timeout} s (logs in {self.dir}/logs)")

    def tcp_open(self, host: str, port: int) -> bool:
        import socket

        with socket.create_connection((self.ip(host), port), timeout=1):
            return True

    # --- the network ---------------------------------------------------------------------

    def network_up(self) -> None:
        self.run(None, [IP, "link", "add", self.bridge, "type", "bridge"])
        self.run(None, [IP, "addr", "add", f"{self.net}.1/24", "dev", self.bridge])
        self.run(None, [IP, "link", "set", self.bridge, "up"])
        for host in HOSTS:
            ns, outside = self.ns(host), f"{self.prefix}-{host}"[:15]
            self.run(None, [IP, "netns", "add", ns])
            self.run(None, [IP, "link", "add", outside, "type", "veth", "peer", "name", "eth0",
                            "netns", ns])  # fmt: skip
            self.run(None, [IP, "link", "set", outside, "master", self.bridge, "up"])
            self.run(host, [IP, "addr", "add", f"{self.ip(host)}/24", "dev", "eth0"])
            self.run(host, [IP, "link", "set", "eth0", "up"])
            self.run(host, [IP, "link", "set", "lo", "up"])

    def network_down(self) -> None:
        names = self.run(None, [IP, "netns", "list"], check=False).stdout.split("\n")
        for line in names:
            ns = line.split(" ")[0]
            if ns.startswith(f"{self.prefix}-"):
                host = ns.removeprefix(f"{self.prefix}-")
                if host in HOSTS:
                    self.kill(host)
                self.run(None, [IP, "netns", "del", ns], check=False)
        for host in HOSTS:  # a veth whose namespace is gone is gone too; this is for half-made ones
            self.run(None, [IP, "link", "del", f"{self.prefix}-{host}"[:15]], check=False)
        self.run(None, [IP, "link", "del", self.bridge], check=False)

    # --- configuration -------------------------------------------------------------------

    def primary_url(self) -> str:
        """PostgreSQL on db1 itself, not through PgBouncer (migrations, checks)."""
        return f"postgresql://postgres@{self.ip('db1')}:5432/{DB_NAME}"

    def write_env(self) -> None:
        web_hosts = ",".join(self.ip(h) for h in ("lb", "web1", "web2"))
        lines = {
            # Through PgBouncer (transaction pooling): no prepared statements across
            # transactions (docs/DEPLOYMENT.md, "PostgreSQL connections").
            "DATABASE_URL": f"postgresql://postgres@{self.ip('db1')}:6432/{DB_NAME}",
            "DB_PREPARED_STATEMENTS": "false",
            "DATABASE_REPLICA_URL": f"postgresql://postgres@{self.ip('db2')}:5432/{DB_NAME}",
            "REDIS_URL": f"redis://{self.ip('redis')}:6379/0",
            "CELERY_BROKER_URL": f"amqp://guest:guest@{self.ip('mq')}:5672//",
            "DJANGO_DEBUG": "false",
            "DJANGO_SECRET_KEY": secrets.token_urlsafe(48),
            "API_KEY_PEPPER": secrets.token_urlsafe(48),
            "ALLOWED_HOSTS": web_hosts,
            # TLS ends at lb in production; inside this private network everything is plain HTTP.
            "SECURE_SSL_REDIRECT": "false",
            "TRUSTED_PROXY_COUNT": "1",
            "QUEUE_STALE_SECONDS": "5",
            "LOG_LEVEL": "INFO",
            "PYTHONUNBUFFERED": "1",
        }
        self.env_file.write_text(
            "# Written by deploy/multihost/up: the environment of every host.\n"
            + "".join(f"{k}={v}\n" for k, v in lines.items())
        )

    def app_env(self, **extra: str) -> dict[str, str]:
        keep = {k: v for k, v in os.environ.items() if not k.startswith(
            ("DATABASE_", "REDIS_", "CELERY_", "PROMETHEUS_", "STATSD_", "DJANGO_"))}  # fmt: skip
        return {**keep, **self.env(), "DJANGO_SETTINGS_MODULE": "glowing_fiesta.settings", **extra}

    # --- PostgreSQL ----------------------------------------------------------------------

    def pg_bin(self, name: str) -> str:
        found = sorted(
            glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4])
        )
        return str(Path(found[-1]).parent / name)

    def as_postgres(self, argv: list[str]) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv

    def pg_data(self, host: str) -> Path:
        return self.dir / host / "data"

    def pg_start(self, host: str) -> None:
        self.run(host, self.as_postgres([
            self.pg_bin("pg_ctl"), "-D", str(self.pg_data(host)), "-l",
            str(self.dir / host / "postgres.log"), "-w", "-t", "60", "start"]))  # fmt: skip

    def pg_stop(self, host: str, mode: str = "fast") -> None:
        self.run(host, self.as_postgres([
            self.pg_bin("pg_ctl"), "-D", str(self.pg_data(host)), "-m", mode, "-w", "stop"]))  # fmt: skip

    def db1_up(self) -> None:
        home = self.dir / "db1"
        home.mkdir(parents=True)
        shutil.chown(home, "postgres", "postgres")
        self.run(None, self.as_postgres([
            self.pg_bin("initdb"), "-D", str(self.pg_data("db1")), "-A", "trust", "-U", "postgres",
            "-E", "UTF8", "--no-sync", "--no-instructions"]), cwd=home)  # fmt: skip
        with (self.pg_data("db1") / "postgresql.conf").open("a") as conf:
            conf.write(
                f"\nlisten_addresses = '{self.ip('db1')}'\nunix_socket_directories = '{home}'\n"
                "wal_level = replica\nmax_wal_senders = 5\nhot_standby = on\n"
                "max_connections = 200\nshared_buffers = 64MB\n"
                # The replica answers queries while it replays: a long read on it delays
                # replay (up to 30 s) rather than being cancelled.
                "max_standby_streaming_delay = 30s\nhot_standby_feedback = on\n"
                "fsync = off\nlog_min_messages = warning\n"
            )
        with (self.pg_data("db1") / "pg_hba.conf").open("a") as hba:
            hba.write(f"host all all {self.net}.0/24 trust\n"
                      f"host replication all {self.net}.0/24 trust\n")  # fmt: skip
        self.pg_start("db1")
        self.psql(f'CREATE DATABASE "{DB_NAME}"', dbname="postgres")

    def psql(self, sql: str, dbname: str = DB_NAME) -> None:
        self.run("db1", self.as_postgres([
            self.pg_bin("psql"), "-h", self.ip("db1"), "-U", "postgres", "-d", dbname,
            "-v", "ON_ERROR_STOP=1", "-c", sql]))  # fmt: skip

    def pgbouncer_up(self) -> None:
        """Debian's PgBouncer on db1:6432 in transaction mode. It does not pass the `options`
        startup parameter the service sets its timeouts with, so the role carries them."""
        home = self.dir / "db1" / "pgbouncer"
        if not home.exists():
            home.mkdir()
            (home / "userlist.txt").write_text('"postgres" ""\n')
            (home / "pgbouncer.ini").write_text(
                f"[databases]\n{DB_NAME} = host={self.ip('db1')} port=5432 dbname={DB_NAME}\n"
                f"[pgbouncer]\nlisten_addr = {self.ip('db1')}\nlisten_port = 6432\n"
                f"unix_socket_dir =\nauth_type = trust\nauth_file = {home}/userlist.txt\n"
                "pool_mode = transaction\nmax_client_conn = 500\ndefault_pool_size = 40\n"
                "ignore_startup_parameters = extra_float_digits,options\n"
                f"logfile = {home}/pgbouncer.log\n"
            )
            for path in [home, *home.iterdir()]:
                shutil.chown(path, "postgres", "postgres")
            self.psql(
                f"ALTER ROLE postgres IN DATABASE {DB_NAME} SET statement_timeout = '5s'; "
                f"ALTER ROLE postgres IN DATABASE {DB_NAME} SET lock_timeout = '1s'"
            )
        pgbouncer = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
        self.spawn("db1", "pgbouncer", self.as_postgres([pgbouncer, str(home / "pgbouncer.ini")]))

    def db2_up(self) -> None:
        home = self.dir / "db2"
        home.mkdir(parents=True)
        shutil.chown(home, "postgres", "postgres")
        # -R writes standby.signal and primary_conninfo: db2 streams from db1 from its first start.
        self.run("db2", self.as_postgres([
            self.pg_bin("pg_basebackup"), "-h", self.ip("db1"), "-U", "postgres",
            "-D", str(self.pg_data("db2")), "-R", "-X", "stream", "-c", "fast"]), cwd=home)  # fmt: skip
        with (self.pg_data("db2") / "postgresql.conf").open("a") as conf:
            conf.write(
                f"\nlisten_addresses = '{self.ip('db2')}'\nunix_socket_directories = '{home}'\n"
            )
        self.pg_start("db2")

    # --- Redis, RabbitMQ -----------------------------------------------------------------

    def redis_up(self) -> None:
        (self.dir / "redis").mkdir(exist_ok=True)
        self.spawn("redis", "redis", [
            "redis-server", "--bind", self.ip("redis"), "--port", "6379", "--save", "",
            "--appendonly", "no", "--dir", str(self.dir / "redis"), "--protected-mode", "no"])  # fmt: skip

    def rabbitmq_env(self) -> dict[str, str]:
        home = self.dir / "mq"
        return {
            "HOME": "/var/lib/rabbitmq",  # Debian's Erlang cookie, owned by `rabbitmq`
            "RABBITMQ_CONF_ENV_FILE": str(home / "rabbitmq-env.conf"),
            "RABBITMQ_CONFIG_FILE": str(home / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(home / "enabled_plugins"),
            "RABBITMQ_NODENAME": "gf@localhost",
            "RABBITMQ_NODE_IP_ADDRESS": self.ip("mq"),
            "RABBITMQ_NODE_PORT": "5672",
            "RABBITMQ_MNESIA_BASE": str(home / "mnesia"),
            "RABBITMQ_LOG_BASE": str(home / "log"),
        }

    def mq_up(self) -> None:
        home = self.dir / "mq"
        if not home.exists():
            home.mkdir()
            (home / "rabbitmq.conf").write_text(RABBITMQ_CONF)
            (home / "rabbitmq-env.conf").write_text("")
            (home / "enabled_plugins").write_text("[].\n")
            for path in [home, *home.iterdir()]:
                shutil.chown(path, "rabbitmq", "rabbitmq")
        self.spawn("mq", "rabbitmq", ["runuser", "-u", "rabbitmq", "--",
                                      str(RABBITMQ_BIN / "rabbitmq-server")], self.rabbitmq_env())  # fmt: skip

    # --- the service ---------------------------------------------------------------------

    def manage(self, host: str, *args: str, **env: str) -> str:
        return self.run(host, [sys.executable, str(ROOT / "manage.py"), *args],
                        env=self.app_env(**env), cwd=ROOT).stdout  # fmt: skip

    def web_up(self, host: str) -> None:
        prom = self.dir / host / "prometheus"
        shutil.rmtree(prom, ignore_errors=True)  # a host's files do not outlive its processes
        prom.mkdir(parents=True)
        env = self.app_env(PROMETHEUS_MULTIPROC_DIR=str(prom),
                           STATSD_BIND=f"{self.ip(host)}:8125")  # fmt: skip
        self.spawn(host, f"{host}-gunicorn", [
            sys.executable, "-m", "gunicorn", "-c", str(ROOT / "deploy" / "gunicorn.conf.py"),
            "--bind", f"{self.ip(host)}:8000", "--workers", "2"], env)  # fmt: skip
        self.spawn(host, f"{host}-statsd", [sys.executable, str(ROOT / "manage.py"), "statsd"], env)

    def worker_up(self) -> None:
        env = self.app_env()
        self.spawn("worker", "worker-celery", [
            sys.executable, "-m", "celery", "-A", "glowing_fiesta", "worker", "--pool", "prefork",
            "--concurrency", "2", "--without-gossip", "--without-mingle", "--loglevel", "INFO"],
            env)  # fmt: skip

    def beat_up(self) -> None:
        self.spawn("worker", "worker-beat", [
            sys.executable, "-m", "celery", "-A", "glowing_fiesta", "beat", "--loglevel", "INFO",
            "--schedule", str(self.dir / "celerybeat-schedule")], self.app_env())  # fmt: skip

    def lb_up(self) -> None:
        home = self.dir / "lb"
        home.mkdir(exist_ok=True)
        conf = nginx_conf_render(home, listen=f"{self.ip('lb')}:80",
                                 upstreams=[f"{self.ip(h)}:8000" for h in ("web1", "web2")])  # fmt: skip
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        self.spawn("lb", "lb-nginx", [nginx, "-c", str(conf), "-e", str(home / "error.log")])

    def healthy(self, host: str) -> bool:
        import urllib.request

        port = 80 if host == "lb" else 8000
        with urllib.request.urlopen(f"http://{self.ip(host)}:{port}/healthz", timeout=2) as r:
            return r.status == 200

    def wait_host(self, host: str) -> None:
        checks = {
            "db1": lambda: self.tcp_open("db1", 5432) and self.tcp_open("db1", 6432),
            "db2": lambda: self.tcp_open("db2", 5432),
            "redis": lambda: self.tcp_open("redis", 6379),
            "mq": lambda: self.tcp_open("mq", 5672),
            "web1": lambda: self.healthy("web1"),
            "web2": lambda: self.healthy("web2"),
            "lb": lambda: self.healthy("lb"),
            "worker": lambda: " ready." in (self.dir / "logs" / "worker-celery.log").read_text(),
        }
        self.wait(host, checks[host])

    def start(self, host: str) -> None:
        """(Re)start the processes of one host whose data already exists."""
        if host in ("db1", "db2"):
            self.pg_start(host)
            if host == "db1":
                self.pgbouncer_up()
        elif host == "redis":
            self.redis_up()
        elif host == "mq":
            self.mq_up()
        elif host in ("web1", "web2"):
            self.web_up(host)
        elif host == "worker":
            self.worker_up()
            self.beat_up()
        elif host == "lb":
            self.lb_up()
        self.wait_host(host)

    def up(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=False)
        self.dir.chmod(0o755)
        (self.dir / "logs").mkdir()
        self.write_env()
        self.network_up()
        self.mq_up()  # boots in the background (seconds) while PostgreSQL is made
        self.redis_up()
        self.db1_up()
        self.manage("worker", "migrate", "--no-input", "-v", "0", DATABASE_URL=self.primary_url())
        self.pgbouncer_up()
        self.db2_up()
        for host in ("db1", "redis", "mq"):
            self.wait_host(host)
        self.web_up("web1")
        self.web_up("web2")
        self.worker_up()
        self.beat_up()
        self.lb_up()
        for host in ("web1", "web2", "worker", "lb"):
            self.wait_host(host)
        (self.dir / "topology.json").write_text(json.dumps(
            {"prefix": self.prefix, "net": self.net,
             "hosts": {h: self.ip(h) for h in HOSTS}}, indent=2))  # fmt: skip

    def down(self) -> None:
        self.network_down()
        shutil.rmtree(self.dir, ignore_errors=True)


def nginx_conf_render(directory: Path, *, listen: str, upstreams: list[str]) -> Path:
    """deploy/nginx/glowing-fiesta.conf for the `lb` host: its upstream block with one server per
    web host, its TLS server listening in plain HTTP on `listen` (TLS is not what is shown here;
    the proxy header still says https, as it would), the proxy settings from the file's own
    comment, and the rest of nginx's configuration (pid, logs, temporary files) in `directory`."""
    text = (ROOT / "deploy" / "nginx" / "glowing-fiesta.conf").read_text()
    proxy = [
        line.removeprefix("#   ")
        for line in text.splitlines()
        if line.startswith("#   proxy_") or line.startswith("#   # ")
    ]
    proxy_file = directory / "proxy.conf"
    proxy_file.write_text(
        "\n".join(proxy).replace("X-Forwarded-Proto $scheme", "X-Forwarded-Proto https") + "\n"
    )
    upstream = re.search(r"^upstream .*?^}", text, re.S | re.M).group(0)
    upstream = upstream.replace(
        "    server 127.0.0.1:8000;\n", "".join(f"    server {u};\n" for u in upstreams)
    )
    servers = re.findall(r"^server \{.*?^}", text, re.S | re.M)
    tls = next(s for s in servers if "listen 443" in s)
    kept = []
    for line in tls.splitlines():
        stripped = line.strip()
        if stripped.startswith(("ssl_", "listen [::]")):
            continue
        if stripped.startswith("listen 443"):
            line = f"    listen {listen};"
        kept.append(line.replace("/etc/nginx/glowing-fiesta-proxy.conf", str(proxy_file)))
    user = "user root;\n" if os.geteuid() == 0 else ""
    conf = directory / "nginx.conf"
    conf.write_text(
        f"{user}daemon off;\nworker_processes 1;\npid {directory}/nginx.pid;\n"
        f"error_log {directory}/error.log warn;\nevents {{ worker_connections 256; }}\n"
        f"http {{\n  access_log {directory}/access.log;\n"
        + "".join(
            f"  {kind}_temp_path {directory}/{kind};\n"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        + upstream
        + "\n"
        + "\n".join(kept)
        + "\n}\n"
    )
    return conf


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["up", "down", "start", "kill"])
    parser.add_argument("host", nargs="?", choices=sorted(HOSTS))
    parser.add_argument("--prefix", default="gfmh", help="namespace and link name prefix")
    parser.add_argument("--dir", type=Path, default=None, help="data and logs (/tmp/PREFIX)")
    parser.add_argument("--net", default="10.231.0", help="the hosts' /24, without its last byte")
    args = parser.parse_args(argv)
    if len(args.prefix) > 6 or not re.fullmatch(r"[a-z][a-z0-9]*", args.prefix):
        parser.error("--prefix: 1-6 lower-case letters and digits (link names are short)")
    topology = Topology(args.prefix, args.dir or Path(tempfile.gettempdir(), args.prefix), args.net)
    if args.command in ("start", "kill") and not args.host:
        parser.error(f"{args.command} needs a HOST")
    if args.command == "up":
        try:
            topology.up()
        except BaseException:
            print(f"up failed; logs in {topology.dir}/logs; run down to clean up", file=sys.stderr)
            raise
        print(f"lb: http://{topology.ip('lb')}/  environment: {topology.env_file}")
    elif args.command == "down":
        topology.down()
    elif args.command == "kill":
        topology.kill(args.host)
    else:
        topology.start(args.host)
    return 0


if __name__ == "__main__":
    sys.exit(main())
