import pytest
from django.core.management import call_command
from django.db import connection


def tables() -> set[str]:
    return set(connection.introspection.table_names())


@pytest.mark.django_db(transaction=True)
def test_migration_is_reversible():
    assert "api_keys" in tables()
    call_command("migrate", "apikeys", "zero", verbosity=0)
    try:
        assert "api_keys" not in tables()
    finally:
        call_command("migrate", verbosity=0)
    assert "api_keys" in tables()
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT indexdef FROM pg_indexes WHERE tablename = 'api_keys' AND indexdef LIKE "
            "'CREATE UNIQUE INDEX%%(prefix)'"
        )
        assert cursor.fetchall()
