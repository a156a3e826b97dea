"""Fixtures shared with other test folders."""

from tests.security.conftest import start_gunicorn  # noqa: F401 - gunicorn on the test database
