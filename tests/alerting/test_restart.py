"""Rules evaluated by the real Celery beat and worker: beat loads the rule files at start and
on SIGHUP; a restart of both during a pending `for` does not reset its timer, so the alert
fires at the evaluation it would have fired at without the restart, and the worker's tasks
deliver it through a real Alertmanager."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from alerting.models import Alert, AlertState, RuleSet
from promql.queries import query_range
from tests.alerting.alertmanager import Alertmanager, Webhook, alertmanager_create, webhook_start
from tests.helpers import ingest, wait_for
from tests.processes import ROOT, Stack

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

FOR_SECONDS = 20
RULES = f"""
groups:
  - name: restart
    interval: 1s
    rules:
      - alert: Down
        expr: up == 0
        for: {FOR_SECONDS}s
        annotations: {{summary: "{{{{ $labels.instance }}}} down"}}
"""


def start_beat(stack: Stack, n: int) -> subprocess.Popen:
    log = (stack.tmp_path / f"beat-{n}.log").open("w")
    process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
        [
            sys.executable, "-m", "celery", "-A", "glowing_fiesta", "beat", "--loglevel", "INFO",
            "--schedule", str(stack.tmp_path / "celerybeat-schedule"),
        ],
        env=stack.env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    stack.processes.append(process)
    return process


def kill(process: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(10)


def beat_log(stack: Stack) -> str:
    return "".join(p.read_text(errors="replace") for p in sorted(stack.tmp_path.glob("beat-*.log")))


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[tuple[Alertmanager, Webhook]]:
    hook = webhook_start()
    am = alertmanager_create(tmp_path / "alertmanager", hook.url)
    am.start()
    yield am, hook
    am.stop()
    hook.stop()


def test_a_pending_for_survives_a_restart_of_beat_and_worker(
    stack: Stack, tmp_path: Path, alertmanager: tuple[Alertmanager, Webhook]
):
    am, webhook = alertmanager
    rules = tmp_path / "restart.yml"
    rules.write_text(RULES)
    stack.env.update(RULE_FILES=str(rules), ALERTING_TICK_SECONDS="1", ALERTMANAGER_URLS=am.url)
    ingest("value", "up", (0.0, datetime.now(UTC) - timedelta(seconds=2), {"instance": "db:5432"}))

    worker = stack.start_worker()
    beat = start_beat(stack, 0)
    wait_for(
        lambda: Alert.objects.filter(state=AlertState.PENDING).exists(),
        timeout=90,
        what="the alert to be pending",
        log=lambda: beat_log(stack),
    )
    active_at = Alert.objects.get().active_at
    kill(beat)
    kill(worker)

    # Beat reads the rule files again when it starts; a changed annotation shows it.
    rules.write_text(RULES.replace("down", "unreachable"))
    stack.start_worker()
    beat = start_beat(stack, 1)
    wait_for(
        lambda: Alert.objects.filter(state=AlertState.FIRING).exists(),
        timeout=90,
        what="the alert to fire",
        log=lambda: beat_log(stack),
    )
    alert = Alert.objects.get()
    assert alert.active_at == active_at
    # The ticks evaluated are the times of the ALERTS_FOR_STATE samples written: each one,
    # before and after the restart, holds the same start, and the alert fired at the first
    # tick evaluated once `for` had passed: where it would have fired without the restart.
    value, _ = query_range(
        query="timestamp(ALERTS_FOR_STATE)",
        start_s=active_at.timestamp(),
        end_s=alert.fired_at.timestamp(),
        step_s=1,
    )
    ticks = sorted({float(t) for t in np.asarray(value.values).ravel() if t == t})
    starts, _ = query_range(
        query="ALERTS_FOR_STATE",
        start_s=active_at.timestamp(),
        end_s=alert.fired_at.timestamp(),
        step_s=1,
    )
    assert set(np.asarray(starts.values).ravel().tolist()) == {active_at.timestamp()}
    due = active_at.timestamp() + FOR_SECONDS
    assert alert.fired_at.timestamp() == min(t for t in ticks if t >= due), ticks
    wait_for(
        lambda: Alert.objects.get().annotations == {"summary": "db:5432 unreachable"},
        timeout=30,
        what="the reloaded annotation",
    )

    # The worker's tasks sent it to Alertmanager, which called the webhook.
    wait_for(
        lambda: any(
            a["annotations"] == {"summary": "db:5432 unreachable"} for a in webhook.alerts("firing")
        ),
        timeout=60,
        what="the notification through Alertmanager",
        log=am.log,
    )

    # SIGHUP to beat swaps the rules in force: a bad file keeps them and records why.
    rules.write_text(RULES.replace("up == 0", "up =="))
    os.kill(beat.pid, signal.SIGHUP)
    wait_for(
        lambda: "rule 'Down'" in (RuleSet.objects.get().error or ""),
        timeout=30,
        what="the refused reload",
        log=lambda: beat_log(stack),
    )
    assert RuleSet.objects.get().groups[0]["rules"][0]["annotations"] == {
        "summary": "{{ $labels.instance }} unreachable"
    }
