import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db import connection

from tests.helpers import django_setup_run

ROOT = Path(__file__).resolve().parents[2]
APPS = ["metrics", "protocols", "idempotency", "retention", "apikeys"]


def _tables():
    with connection.cursor() as cursor:
        return set(connection.introspection.table_names(cursor))


@pytest.mark.django_db(transaction=True)
def test_every_app_migrates_to_zero_and_back():
    from django.db.migrations.loader import MigrationLoader

    loader = MigrationLoader(connection)
    apps = [app for app in APPS if app in loader.migrated_apps]
    assert {"metrics", "apikeys"} <= set(apps)
    assert {"metrics", "metric_points", "metric_rollup_hour", "api_keys"} <= _tables()
    for app in apps:
        call_command("migrate", app, "zero", verbosity=0)
    assert (
        not {"metrics", "series", "metric_points", "metric_rollup_minute", "api_keys"} & _tables()
    )
    call_command("migrate", verbosity=0)
    assert {"metrics", "series", "metric_points", "metric_rollup_day", "api_keys"} <= _tables()
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_inherits WHERE inhparent = 'metric_points'::regclass"
        )
        assert cursor.fetchone()[0] >= 17  # 8 days back, today, 8 days ahead


@pytest.mark.django_db(transaction=True)
def test_the_cumulative_streams_model_moves_to_protocols_and_back_without_touching_its_table():
    from django.db.migrations.recorder import MigrationRecorder

    moves = {("protocols", "0001_initial"), ("metrics", "0012_cumulative_streams_move_out")}
    call_command("migrate", "protocols", "zero", verbosity=0)
    assert not moves & set(MigrationRecorder(connection).applied_migrations())
    assert "cumulative_streams" in _tables()
    call_command("migrate", verbosity=0)
    assert moves <= set(MigrationRecorder(connection).applied_migrations())
    assert "cumulative_streams" in _tables()


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("clean_point_tables")
def test_the_15_minute_rollups_start_from_the_minute_rollups_kept():
    call_command("migrate", "metrics", "0007", verbosity=0)
    assert "metric_rollup_15m" not in _tables()
    # A quarter hour an hour ago: its day's minute partition exists.
    now = datetime.now(UTC) - timedelta(hours=1)
    quarter = now.replace(minute=now.minute // 15 * 15, second=0, microsecond=0)
    minute = timedelta(minutes=1)
    with connection.cursor() as cursor:
        # Two minutes of one quarter hour and one of the next, written before the upgrade.
        cursor.execute(
            "INSERT INTO metric_rollup_minute (series_id, bucket, count, sum, min, max)"
            " VALUES (7, %s, 2, 3, 1, 2), (7, %s, 1, 5, 5, 5), (7, %s, 4, -1, -3, 2)",
            [quarter + minute, quarter + 14 * minute, quarter + 15 * minute],
        )
    call_command("migrate", "metrics", verbosity=0)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT bucket, count, sum, min, max FROM metric_rollup_15m WHERE series_id = 7"
            " ORDER BY bucket"
        )
        assert cursor.fetchall() == [
            (quarter, 3, 8.0, 1.0, 5.0),
            (quarter + 15 * minute, 4, -1.0, -3.0, 2.0),
        ]


def _batch(key_id: int, state: str, *, packed: bool) -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO ingest_batches (api_key_id, state, packed, payload, points, attempts,"
            " error, created_at, updated_at) VALUES (%s, %s, %s, %s::jsonb, 1, 0, '', now(), now())"
            " RETURNING id",
            [key_id, state, b"\x00" if packed else None, None if packed else "[]"],
        )
        return cursor.fetchone()[0]


def _batch_ids() -> set[int]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT id FROM ingest_batches")
        return {row[0] for row in cursor.fetchall()}


@pytest.mark.django_db(transaction=True)
def test_going_back_before_packed_batches_keeps_the_json_ones_and_refuses_unfinished_packed():
    from django.db.utils import ProgrammingError

    from tests.factories import ApiKeyFactory

    key = ApiKeyFactory()
    pending = _batch(key.pk, "pending", packed=True)
    done = _batch(key.pk, "done", packed=True)
    failed = _batch(key.pk, "failed", packed=True)
    old = _batch(key.pk, "done", packed=False)
    try:
        with pytest.raises(ProgrammingError, match="unfinished packed batches"):
            call_command("migrate", "metrics", "0005", verbosity=0)
        assert _batch_ids() == {pending, done, failed, old}
        with connection.cursor() as cursor:
            cursor.execute("UPDATE ingest_batches SET state = 'done' WHERE id = %s", [pending])
        call_command("migrate", "metrics", "0005", verbosity=0)
        assert _batch_ids() == {old}
    finally:
        call_command("migrate", "metrics", verbosity=0)
    assert "packed" in {
        column.name
        for column in connection.introspection.get_table_description(
            connection.cursor(), "ingest_batches"
        )
    }


@pytest.mark.django_db(transaction=True)
def test_going_back_before_compaction_is_refused_while_a_compacted_day_exists(clean_point_tables):
    from django.db import DatabaseError

    from metrics.compaction import compactable_before, points_compact
    from metrics.services import PointInput, points_ingest

    now = datetime.now(UTC)
    day = datetime.combine(compactable_before(now), datetime.min.time(), UTC) - timedelta(days=1)
    points_ingest(points=[PointInput("value", "old", 1.5, day + timedelta(hours=1))])
    assert len(points_compact(now=now).days) == 1
    try:
        with pytest.raises(DatabaseError, match="compacted days"):
            call_command("migrate", "metrics", "0013", verbosity=0)
        with connection.cursor() as cursor:
            cursor.execute("SELECT sum(points) FROM metric_points_compact")
            assert cursor.fetchone()[0] == 1
            cursor.execute("DELETE FROM metric_points_compact")
        call_command("migrate", "metrics", "0013", verbosity=0)
        assert "metric_points_compact" not in connection.introspection.table_names()
    finally:
        call_command("migrate", "metrics", verbosity=0)
    assert "metric_points_compact" in connection.introspection.table_names()


def _start_django(env_overrides: dict[str, str]) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in {"DJANGO_SECRET_KEY", "API_KEY_PEPPER"}}
    env.update(env_overrides)
    return django_setup_run(env)


@pytest.mark.parametrize("missing", ["DJANGO_SECRET_KEY", "API_KEY_PEPPER"])
def test_production_settings_refuse_to_start_without_a_secret(missing):
    present = {"DJANGO_SECRET_KEY": "s" * 50, "API_KEY_PEPPER": "p" * 50}
    present.pop(missing)
    result = _start_django({"DJANGO_DEBUG": "false", **present})
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert missing in lines[0]


def test_production_settings_start_with_both_secrets():
    result = _start_django(
        {"DJANGO_DEBUG": "false", "DJANGO_SECRET_KEY": "s" * 50, "API_KEY_PEPPER": "p" * 50}
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("LOG_LEVEL", "LOUD"),
        ("API_KEY_DEFAULT_RATE_LIMIT", "0"),
        ("DJANGO_DEBUG", "maybe"),
        ("RULE_EVALUATION_INTERVAL", "0"),
        ("ALERTING_EXTERNAL_LABELS", "cluster"),
        ("ALERTING_EXTERNAL_LABELS", "a b=c"),
        ("ALERTMANAGER_URLS", "alertmanager:9093"),
    ],
)
def test_a_bad_setting_stops_start_up_with_a_message_naming_it(variable, value):
    result = _start_django({"DJANGO_DEBUG": "true", variable: value})
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert variable in lines[0]


@pytest.mark.parametrize(
    ("broker", "role", "expected", "heartbeat"),
    [
        # RabbitMQ: confirms everywhere; bounded publishes and no heartbeats in web processes,
        # heartbeats in workers; no Redis visibility timeout.
        ("amqp://guest:guest@10.0.0.9:5672//", "web", {"confirm_publish": True, "read_timeout": 1, "write_timeout": 1}, 0),
        ("amqp://guest:guest@10.0.0.9:5672//", "worker", {"confirm_publish": True}, 10),
        ("redis://10.0.0.9:6379/0", "web", {"visibility_timeout": 3600, "socket_connect_timeout": 1, "socket_timeout": 1}, None),
        ("redis://10.0.0.9:6379/0", "worker", {"visibility_timeout": 3600, "socket_connect_timeout": 1}, None),
    ],
)  # fmt: skip
def test_the_broker_settings_follow_the_broker_url_and_the_process_role(
    broker, role, expected, heartbeat
):
    show = (
        "import django, json; django.setup(); from django.conf import settings as s; "
        "print(json.dumps([s.CELERY_BROKER_TRANSPORT_OPTIONS, "
        "getattr(s, 'CELERY_BROKER_HEARTBEAT', None)]))"
    )
    result = subprocess.run(  # noqa: S603 - our own interpreter and code
        [sys.executable, "-c", show],
        env={
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "glowing_fiesta.settings",
            "CELERY_BROKER_URL": broker,
            "PROCESS_ROLE": role,
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    options, beats = json.loads(result.stdout.strip().splitlines()[-1])
    assert (options, beats) == (expected, heartbeat)
