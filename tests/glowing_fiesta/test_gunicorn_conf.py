"""deploy/gunicorn.conf.py's hooks run in gunicorn's arbiter, the process every worker is forked
from: they must do their work without importing the application, or workers started after a
reload (HUP) would run the old release's settings and Celery app. Its request-line limit holds
the longest query the service takes."""

import json
import os
import subprocess
import sys
from pathlib import Path

from gunicorn.http.message import MAX_REQUEST_LINE

from tests.helpers import gunicorn_conf_value, longest_query_target

ROOT = Path(__file__).resolve().parents[2]


def test_the_longest_query_fits_the_request_line_limit():
    line = f"GET {longest_query_target()} HTTP/1.1"

    assert len(line) <= gunicorn_conf_value("limit_request_line") <= MAX_REQUEST_LINE
    assert len(line) == 7473  # the figure deploy/gunicorn.conf.py and docs/DEPLOYMENT.md give


ARBITER = """
import json, runpy, sys
conf = runpy.run_path("deploy/gunicorn.conf.py")
conf["on_starting"](None)
# A worker that ran after the start and has just exited:
class Worker:
    pid = int(sys.argv[1])
open(sys.argv[2], "wb").close()
conf["child_exit"](None, Worker())
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in
      {"glowing_fiesta", "metrics", "apikeys", "django", "celery"})))
"""


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_the_hooks_prune_the_figures_without_importing_the_application(tmp_path):
    dead, exited = _dead_pid(), _dead_pid()
    alive = os.getpid()
    stale = tmp_path / f"counter_{dead}.db"
    live = tmp_path / f"counter_{alive}.db"
    exited_gauge = tmp_path / f"gauge_livesum_{exited}.db"
    for file in (stale, live):
        file.write_bytes(b"")
    done = subprocess.run(  # noqa: S603 - a fixed script
        [sys.executable, "-c", ARBITER, str(exited), str(exited_gauge)],
        cwd=ROOT,
        env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert json.loads(done.stdout.splitlines()[-1]) == []
    # on_starting: files of processes that no longer run go, those of running ones stay.
    assert not stale.exists()
    assert live.exists()
    # child_exit: the exited worker's live-only gauge goes.
    assert not exited_gauge.exists()
