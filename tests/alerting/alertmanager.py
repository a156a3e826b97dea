"""A private Alertmanager (Debian's prometheus-alertmanager) and the webhook receiver it calls,
both on free loopback ports, for the notification tests."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from glowing_fiesta.devstack import free_port

BINARY = shutil.which("prometheus-alertmanager") or "/usr/bin/prometheus-alertmanager"


@dataclass
class Webhook:
    """An HTTP server that keeps every notification Alertmanager posts to it."""

    server: ThreadingHTTPServer
    received: list[dict] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/hook"

    def alerts(self, status: str) -> list[dict]:
        """Every alert of the notifications received so far whose status is `status`."""
        return [a for body in list(self.received) for a in body["alerts"] if a["status"] == status]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def webhook_start() -> Webhook:
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", 0))
            received.append(json.loads(self.rfile.read(length)))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return Webhook(server, received)


@dataclass
class Alertmanager:
    home: Path
    port: int
    webhook_url: str
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        path = self.home / "alertmanager.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start(self) -> None:
        config = self.home / "alertmanager.yml"
        config.write_text(
            json.dumps(
                {
                    "route": {
                        "receiver": "hook",
                        "group_by": ["alertname"],
                        "group_wait": "1s",
                        "group_interval": "1s",
                        "repeat_interval": "1h",
                    },
                    "receivers": [
                        {
                            "name": "hook",
                            "webhook_configs": [{"url": self.webhook_url, "send_resolved": True}],
                        }
                    ],
                }
            )
        )
        with (self.home / "alertmanager.log").open("a") as log:
            self.process = subprocess.Popen(  # noqa: S603 - Debian's binary, our own config
                [
                    BINARY,
                    f"--config.file={config}",
                    f"--storage.path={self.home / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--cluster.listen-address=",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as answer:  # noqa: S310
                    if answer.status == 200:
                        return
            except OSError:
                pass
            assert self.process.poll() is None, f"alertmanager exited: {self.log()}"
            assert time.monotonic() < deadline, f"alertmanager not ready in 30 s: {self.log()}"
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.process = None

    def alerts(self) -> list[dict]:
        """GET /api/v2/alerts: what Alertmanager holds now."""
        with urllib.request.urlopen(f"{self.url}/api/v2/alerts", timeout=5) as answer:  # noqa: S310
            return json.loads(answer.read())


def alertmanager_create(home: Path, webhook_url: str) -> Alertmanager:
    home.mkdir(parents=True, exist_ok=True)
    return Alertmanager(home, free_port(), webhook_url)
