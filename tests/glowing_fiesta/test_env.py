"""The environment readers of settings.py: values, defaults and the one-line refusals."""

from datetime import time

import pytest

from glowing_fiesta.env import (
    ConfigError,
    env_address,
    env_bool,
    env_choice,
    env_file,
    env_header_name,
    env_int,
    env_origins,
    env_process_role,
    env_rate,
    env_required,
    env_secret,
    env_time,
    env_writable_dir,
)

NAME = "GF_TEST_VARIABLE"


@pytest.fixture
def variable(monkeypatch):
    def set_to(value: str | None) -> None:
        if value is None:
            monkeypatch.delenv(NAME, raising=False)
        else:
            monkeypatch.setenv(NAME, value)

    return set_to


def refusal(call) -> str:
    with pytest.raises(ConfigError) as caught:
        call()
    message = str(caught.value)
    assert message.startswith("glowing-fiesta: configuration error: ")
    assert NAME in message
    return message


@pytest.mark.parametrize(
    ("raw", "value"), [(None, True), ("", True), (" off ", False), ("YES", True)]
)
def test_env_bool_reads_the_usual_spellings_and_an_empty_value_as_the_default(variable, raw, value):
    variable(raw)
    assert env_bool(NAME, default=True) is value


def test_env_bool_refuses_anything_else(variable):
    variable("maybe")
    assert "true or false, not 'maybe'" in refusal(lambda: env_bool(NAME))


@pytest.mark.parametrize(("raw", "message"), [("x", "from 1 to 5"), ("6", "from 1 to 5, not 6")])
def test_env_int_keeps_its_bounds(variable, raw, message):
    variable(raw)
    assert message in refusal(lambda: env_int(NAME, 3, minimum=1, maximum=5))
    variable("5")
    assert env_int(NAME, 3, minimum=1, maximum=5) == 5


def test_required_and_secret_values(variable):
    variable("")
    assert "must be set (start one)" in refusal(lambda: env_required(NAME, hint="start one"))
    assert "when DJANGO_DEBUG is off" in refusal(
        lambda: env_secret(NAME, debug=False, placeholder="p")
    )
    assert env_secret(NAME, debug=True, placeholder="p") == "p"
    variable("s")
    assert env_secret(NAME, debug=False, placeholder="p") == "s"


def test_env_choice_lists_the_choices_and_compares_in_upper_case(variable):
    variable("warning")
    assert env_choice(NAME, "INFO", ("INFO", "WARNING"), upper=True) == "WARNING"
    variable("loud")
    assert "must be INFO or WARNING, not 'LOUD'" in refusal(
        lambda: env_choice(NAME, "INFO", ("INFO", "WARNING"), upper=True)
    )


@pytest.mark.parametrize(
    ("raw", "argv", "role"),
    [
        (None, ["/venv/bin/gunicorn", "glowing_fiesta.wsgi"], "web"),
        ("", ["manage.py", "statsd"], "statsd"),
        ("beat", ["/venv/bin/celery", "-A", "glowing_fiesta", "worker"], "beat"),
    ],
)
def test_the_process_role_is_the_variable_or_else_the_command_line(variable, raw, argv, role):
    variable(raw)
    assert env_process_role(NAME, argv) == role


def test_an_unknown_process_role_is_refused(variable):
    variable("janitor")
    assert "web, worker, beat, statsd or cli, not 'janitor'" in refusal(
        lambda: env_process_role(NAME, ["manage.py"])
    )


def test_header_names_and_origins(variable):
    variable("X-Forwarded-Proto")
    assert env_header_name(NAME) == "X-Forwarded-Proto"
    variable("X_Forwarded_Proto")
    refusal(lambda: env_header_name(NAME))
    variable("https://a.example.com, http://b.example.com:8080")
    assert env_origins(NAME, "") == ["https://a.example.com", "http://b.example.com:8080"]
    variable("https://a.example.com/path")
    refusal(lambda: env_origins(NAME, ""))


@pytest.mark.parametrize(
    ("raw", "rate"), [("100/minute", "100/m"), ("5/s", "5/s"), ("9999999/day", "9999999/d")]
)
def test_env_rate_returns_the_short_form(variable, raw, rate):
    variable(raw)
    assert env_rate(NAME, "1/m") == rate


@pytest.mark.parametrize("raw", ["0/m", "10/week", "10", "10000000/m"])
def test_env_rate_refuses_other_shapes(variable, raw):
    variable(raw)
    refusal(lambda: env_rate(NAME, "1/m"))


def test_env_time_is_strictly_hh_mm(variable):
    variable("04:15")
    assert env_time(NAME, "03:30") == time(4, 15)
    for raw in ["04:15:00", "4:15", "04:15+02:00", "25:00"]:
        variable(raw)
        assert "HH:MM (UTC)" in refusal(lambda: env_time(NAME, "03:30"))


def test_env_address_names_what_is_wrong(variable):
    variable("[::1]:8125")
    assert env_address(NAME, "127.0.0.1:8125") == ("::1", 8125)
    variable("::1:8125")
    assert "an IPv6 address goes in brackets" in refusal(lambda: env_address(NAME, "x:1"))


def test_directories_and_files_are_checked(variable, tmp_path):
    variable(str(tmp_path))
    assert env_writable_dir(NAME) == str(tmp_path)
    variable(str(tmp_path / "absent"))
    refusal(lambda: env_writable_dir(NAME))
    variable(str(tmp_path / "new.log"))
    assert env_file(NAME) == str(tmp_path / "new.log")
    variable(str(tmp_path / "absent" / "new.log"))
    refusal(lambda: env_file(NAME))
    variable(None)
    assert env_writable_dir(NAME) == env_file(NAME) == ""
