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


@pytest.mark.django_db(transaction=True)
def test_namespaces_migration_forward_and_back():
    def columns() -> set[str]:
        with connection.cursor() as cursor:
            return {
                c.name for c in connection.introspection.get_table_description(cursor, "api_keys")
            }

    call_command("migrate", "apikeys", "0002", verbosity=0)
    try:
        assert "namespaces" not in columns()
        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO api_keys (name, prefix, key_hash, scopes, rate_limit, created_at) "
                "VALUES ('old', 'Old12345', %s, '{read}', 60, now())",
                ["0" * 64],
            )
        call_command("migrate", "apikeys", "0003", verbosity=0)
        assert "namespaces" in columns()
        with connection.cursor() as cursor:
            # A key made before namespaces existed keeps reaching every metric.
            cursor.execute("SELECT namespaces FROM api_keys WHERE prefix = 'Old12345'")
            assert cursor.fetchone() == ([],)
            cursor.execute(
                "UPDATE api_keys SET namespaces = '{checkout.}' WHERE prefix = 'Old12345'"
            )
        call_command("migrate", "apikeys", "0002", verbosity=0)
        assert "namespaces" not in columns()
    finally:
        call_command("migrate", verbosity=0)
        with connection.cursor() as cursor:
            cursor.execute("DELETE FROM api_keys WHERE prefix = 'Old12345'")
    assert "namespaces" in columns()
