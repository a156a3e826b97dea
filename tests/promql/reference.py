"""A reference Prometheus (Debian's 2.42 in CI) serving a dataset, for comparing PromQL answers.

The dataset is written as OpenMetrics text, turned into TSDB blocks by `promtool tsdb
create-blocks-from openmetrics` (backfilling: no scrape, no remote write), and a `prometheus`
with no scrape target is started on those blocks on a free loopback port. Blocks of recent data
load as they are: the new server's head is empty, so nothing overlaps it (and 2.42 allows
overlapping blocks anyway; `--storage.tsdb.allow-overlapping-blocks` is deprecated there).

Backfilled series have no staleness markers: a series that stops is seen for the lookback
delta (5 minutes) after its last sample, as the service sees it too.

This module imports nothing of the service: a benchmark can start the same reference.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from glowing_fiesta.devstack import free_port, wait_or_kill
from tests.promql.dataset import Dataset, dataset_openmetrics

START_SECONDS = 30
# Long enough for a dataset that ends within the service's 7-day window and began before it,
# and for the 30 days of bench-promql.
RETENTION = "60d"
LOOKBACK_DELTA = "5m"  # Prometheus's default, said out loud: the service's PROMQL_LOOKBACK_DELTA
CONFIG = "global:\n  scrape_interval: 15s\n  evaluation_interval: 15s\nscrape_configs: []\n"


def binaries() -> tuple[str, str] | None:
    """(prometheus, promtool) from PATH, or None when either is missing."""
    prometheus, promtool = shutil.which("prometheus"), shutil.which("promtool")
    return (prometheus, promtool) if prometheus and promtool else None


@dataclass
class Reference:
    process: subprocess.Popen
    port: int
    workdir: Path
    samples: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return (self.workdir / "prometheus.log").read_text(errors="replace")

    def query(self, query: str, **params: str | float) -> dict:
        """`POST /api/v1/query` (form-encoded); the decoded answer, whatever its status."""
        return _post(f"{self.url}/api/v1/query", {"query": query, **params})

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            wait_or_kill(self.process, 20)


def _post(url: str, form: dict) -> dict:
    body = urllib.parse.urlencode(form).encode()
    request = urllib.request.Request(url, data=body, method="POST")  # noqa: S310 - loopback
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return json.loads(response.read())
    except urllib.error.HTTPError as error:
        return json.loads(error.read())


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as response:  # noqa: S310
            return response.status == 200
    except OSError:
        return False


def blocks_build(source: Path, datadir: Path, *, timeout: float = 120) -> None:
    """TSDB blocks in `datadir` from the OpenMetrics file `source` (promtool backfilling)."""
    _, promtool = binaries() or ("", "promtool")
    subprocess.run(  # noqa: S603 - Debian's promtool on our own file
        [
            promtool,
            "tsdb",
            "create-blocks-from",
            "openmetrics",
            "--quiet",
            str(source),
            str(datadir),
        ],
        check=True,
        capture_output=True,
        timeout=timeout,
    )


def blocks_create(dataset: Dataset, workdir: Path) -> tuple[Path, int]:
    """TSDB blocks of `dataset` in `workdir/data`; returns that path and the samples written."""
    source = workdir / "dataset.om"
    samples = dataset_openmetrics(dataset, source)
    datadir = workdir / "data"
    blocks_build(source, datadir)
    source.unlink()  # tens of megabytes, read once
    return datadir, samples


def reference_serve(
    datadir: Path, workdir: Path, *, samples: int = 0, start_seconds: float = START_SECONDS
) -> Reference:
    """Prometheus serving the blocks in `datadir`; returns once `/-/ready` answers 200 (it may
    take a while to open many blocks). Call `.stop()` when done."""
    prometheus, _ = binaries() or ("prometheus", "")
    config = workdir / "prometheus.yml"
    config.write_text(CONFIG)
    port = free_port()
    with (workdir / "prometheus.log").open("w") as log:
        process = subprocess.Popen(  # noqa: S603 - Debian's prometheus, our own flags
            [
                prometheus,
                f"--config.file={config}",
                f"--storage.tsdb.path={datadir}",
                f"--storage.tsdb.retention.time={RETENTION}",
                f"--web.listen-address=127.0.0.1:{port}",
                f"--query.lookback-delta={LOOKBACK_DELTA}",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=workdir,
        )
    reference = Reference(process=process, port=port, workdir=workdir, samples=samples)
    deadline = time.monotonic() + start_seconds
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"prometheus exited with {process.returncode}:\n{reference.log()}")
        if _ready(reference.url):
            return reference
        if time.monotonic() > deadline:
            reference.stop()
            raise RuntimeError(f"prometheus not ready in {start_seconds} s:\n{reference.log()}")
        time.sleep(0.1)


def reference_start(dataset: Dataset, workdir: Path) -> Reference:
    """Build the blocks of `dataset` under `workdir` and start Prometheus on them; returns once
    `/-/ready` answers 200. Call `.stop()` when done."""
    workdir.mkdir(parents=True, exist_ok=True)
    datadir, samples = blocks_create(dataset, workdir)
    return reference_serve(datadir, workdir, samples=samples)
