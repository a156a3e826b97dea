"""Every long-running process settles its garbage collector once loaded (glowing_fiesta/gc_tuning.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from glowing_fiesta.gc_tuning import GEN0_THRESHOLD
from tests.processes import ROOT, worker_database_url
from tests.security.conftest import production_env


def test_settling_freezes_what_is_loaded_and_raises_the_youngest_threshold():
    # In a process of its own: the test session's collector stays as it is.
    script = (
        "import django, gc, json; django.setup(); "
        "from glowing_fiesta.gc_tuning import gc_settle; "
        "before = gc.get_threshold(); frozen = gc_settle(); "
        "print(json.dumps([frozen, gc.get_freeze_count(), before, gc.get_threshold()]))"
    )
    result = subprocess.run(  # noqa: S603 - our own interpreter
        [sys.executable, "-c", script],
        env=production_env(DATABASE_URL=worker_database_url()),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    frozen, freeze_count, before, after = json.loads(result.stdout.splitlines()[-1])
    # Django, DRF and the URL patterns: far more than a bare interpreter's few thousand.
    assert frozen == freeze_count > 50_000
    assert after == [GEN0_THRESHOLD, before[1], before[2]]


@pytest.mark.django_db(transaction=True)
def test_gunicorn_workers_settle_their_collector_once_loaded(start_gunicorn):
    server = start_gunicorn(LOG_LEVEL="DEBUG")

    def settled() -> list[dict]:
        return [
            json.loads(line)
            for line in server.log().splitlines()
            if line.startswith("{") and '"garbage collector settled"' in line
        ]

    deadline = time.monotonic() + 30
    while len(settled()) < 2 and time.monotonic() < deadline:  # the second may boot later
        time.sleep(0.2)
    assert len(settled()) == 2  # one per worker
    assert all(entry["frozen"] > 50_000 for entry in settled())
