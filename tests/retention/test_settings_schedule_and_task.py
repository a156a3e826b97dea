import os
import subprocess
from datetime import UTC, datetime, time, timedelta
from pathlib import Path

import pytest
from celery.schedules import crontab

from glowing_fiesta.celery import app, beat_schedule
from retention.tasks import retention_apply_task
from tests.helpers import django_setup_run

from .helpers import ingest, point_times

ROOT = Path(__file__).resolve().parents[2]
PREFIX = "glowing-fiesta: configuration error: "


def _start_django(**env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if "RETENTION" not in k}
    return django_setup_run({**clean, **env})


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"RETENTION_DAYS": "0"}, "RETENTION_DAYS must be an integer from 1 to 3650, not 0"),
        ({"RETENTION_DAYS": "3651"}, "RETENTION_DAYS must be an integer from 1 to 3650, not 3651"),
        ({"RETENTION_DAYS": "ninety"}, "RETENTION_DAYS must be an integer from 1 to 3650"),
        (
            {"RETENTION_DAYS": "30", "ROLLUP_RETENTION_DAYS": "29"},
            "ROLLUP_RETENTION_DAYS (29) must be at least RETENTION_DAYS (30)",
        ),
        ({"RETENTION_RUN_AT": "24:00"}, "RETENTION_RUN_AT must be HH:MM (UTC), not '24:00'"),
        (
            {"RETENTION_RUN_AT": "03:30+02:00"},
            "RETENTION_RUN_AT must be HH:MM (UTC), not '03:30+02:00'",
        ),
    ],
)
def test_a_bad_retention_setting_stops_start_up_with_a_one_line_message(env, message):
    result = _start_django(**env)
    assert result.returncode != 0
    assert result.stderr.strip() == PREFIX + message


@pytest.mark.parametrize(
    "env",
    [
        {"RETENTION_DAYS": "1", "ROLLUP_RETENTION_DAYS": "1"},
        {"RETENTION_DAYS": "3650", "ROLLUP_RETENTION_DAYS": "3650", "RETENTION_RUN_AT": "23:59"},
    ],
)
def test_retention_settings_at_their_bounds_start(env):
    result = _start_django(**env)
    assert (result.returncode, result.stderr) == (0, "")


def test_the_beat_schedule_runs_retention_daily_at_the_configured_utc_time(settings):
    settings.RETENTION_RUN_AT = time(4, 15)
    schedule = beat_schedule(settings)

    entry = schedule["retention-apply"]
    assert entry["task"] == "retention.apply"
    when = entry["schedule"]
    assert isinstance(when, crontab)
    assert (when.hour, when.minute) == ({4}, {15})
    assert when.day_of_week == set(range(7))
    assert when.day_of_month == set(range(1, 32))
    assert when.month_of_year == set(range(1, 13))
    assert str(app.timezone) == "UTC"
    assert "metrics-partitions-ensure" in schedule
    assert "retention.apply" in app.tasks


@pytest.mark.django_db
def test_the_task_removes_what_has_expired_now(settings):
    real_now = datetime.now(UTC)
    expired = real_now - timedelta(days=settings.RETENTION_DAYS, hours=1)
    kept = real_now - timedelta(days=settings.RETENTION_DAYS) + timedelta(hours=1)
    ingest(expired, kept)

    result = retention_apply_task.apply()

    assert result.successful(), result.traceback
    assert result.get()["metric_points"] == 1
    assert point_times() == [kept]
