"""The zero-config launcher behind `make run` / `make test`, run for real."""

import shutil
import stat
import sys
import tempfile
from pathlib import Path

import pytest

from glowing_fiesta import devstack

PROBE = (
    "import os, psycopg, redis;"
    "r = redis.Redis.from_url(os.environ['REDIS_URL']); r.set('probe', 'ok');"
    "print('redis', r.get('probe').decode());"
    "c = psycopg.connect(os.environ['DATABASE_URL']);"
    "print('postgres', c.execute('select current_database()').fetchone()[0]);"
    "print('secret', len(os.environ['API_KEY_PEPPER']))"
)


@pytest.fixture
def data_dir(monkeypatch):
    # Outside pytest's own temporary tree: pytest keeps that tree private to root (0700), and
    # another pytest session starting would take back the access the embedded PostgreSQL's own
    # user is given to it.
    base = Path(tempfile.mkdtemp(prefix="gf-devstack-"))
    monkeypatch.setattr(devstack, "DATA", base / "data")
    yield base / "data"
    shutil.rmtree(base, ignore_errors=True)


def test_exec_embeds_redis_and_postgres_when_no_urls_are_set(data_dir, monkeypatch, capfd):
    for name in ("DATABASE_URL", "REDIS_URL", "DJANGO_SECRET_KEY", "API_KEY_PEPPER"):
        monkeypatch.delenv(name, raising=False)
    status = devstack.main(["exec", "--", sys.executable, "-c", PROBE])
    out = capfd.readouterr().out
    assert status == 0
    assert "redis ok" in out
    assert f"postgres {devstack.DB_NAME}" in out
    assert "secret 64" in out
    assert (data_dir / "postgres" / "PG_VERSION").exists()
    # Every migration takes on the embedded server, which is built without lz4 (migration
    # metrics 0014 falls back to pglz there).
    migrate = [sys.executable, str(devstack.ROOT / "manage.py"), "migrate", "--no-input", "-v", "0"]
    assert devstack.main(["exec", "--", *migrate]) == 0


def test_configured_servers_are_used_and_nothing_is_embedded(data_dir, monkeypatch, capfd):
    from django.conf import settings

    monkeypatch.setenv("DATABASE_URL", settings.DATABASE_URL)
    monkeypatch.setenv("REDIS_URL", settings.REDIS_URL)
    probe = PROBE.split("c = psycopg")[0].replace("'probe'", "'gf-devstack-probe'")
    status = devstack.main(["exec", "--", sys.executable, "-c", probe])
    assert status == 0
    assert "redis ok" in capfd.readouterr().out
    assert not (data_dir / "postgres").exists()
    assert not (data_dir / "redis").exists()


def test_local_secrets_are_created_once_private_and_reused(data_dir):
    first = devstack.local_secrets()
    assert set(first) == {"DJANGO_SECRET_KEY", "API_KEY_PEPPER"}
    assert first["DJANGO_SECRET_KEY"] != first["API_KEY_PEPPER"]
    assert devstack.local_secrets() == first
    mode = (data_dir / "secrets.json").stat().st_mode
    assert stat.S_IMODE(mode) == 0o600


def test_unknown_command_prints_usage(capsys):
    assert devstack.main(["fly"]) == 2
    assert "make run" in capsys.readouterr().err


def test_run_loads_the_example_rules_unless_rule_files_are_set(tmp_path):
    assert devstack.EXAMPLE_RULES.exists()
    assert devstack.example_rules_env({})["RULE_FILES"] == str(devstack.EXAMPLE_RULES)
    assert devstack.example_rules_env({"RULE_FILES": "/x/*.yml"})["RULE_FILES"] == "/x/*.yml"
    assert "RULE_FILES" not in devstack.example_rules_env({}, tmp_path / "none.yml")
