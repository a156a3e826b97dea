"""The PROMETHEUS_MULTIPROC_DIR files: one set per process, summed by GET /metrics.

prometheus_client keeps each process's values in `<type>_<pid>.db` files of that directory, so
gunicorn workers and Celery pool processes each count and /metrics shows their sum. Files of a
process that has exited stay, so that counters never go down while the service runs; at the
start of the service (gunicorn's on_starting, devstack) the files of processes that no longer
run are removed, so totals start again from zero, as Prometheus expects after a restart.
"""

from __future__ import annotations

import os
from pathlib import Path

from django.conf import settings
from prometheus_client import multiprocess


def directory() -> Path | None:
    return Path(settings.PROMETHEUS_MULTIPROC_DIR) if settings.PROMETHEUS_MULTIPROC_DIR else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def directory_prune() -> int:
    """Remove the files of processes that are no longer running; return how many."""
    path = directory()
    if path is None:
        return 0
    removed = 0
    for file in path.glob("*.db"):
        pid = file.stem.rpartition("_")[2]
        if pid.isdigit() and not _alive(int(pid)) and int(pid) != os.getpid():
            file.unlink(missing_ok=True)
            removed += 1
    return removed


def process_dead(pid: int) -> None:
    """Forget the live-only gauges of a process that exited (gunicorn's child_exit hook)."""
    if directory() is not None:
        multiprocess.mark_process_dead(pid, str(directory()))
