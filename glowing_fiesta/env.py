"""The environment readers of `glowing_fiesta/settings.py`, each with its check.

Every reader takes the variable's name and its default, and returns the value in the type the
setting needs. An empty variable counts as unset. A bad value raises ConfigError, which stops
start-up with one line naming the variable, so a misconfigured deploy fails loudly before it
serves anything. Only settings.py calls these; everything else reads `django.conf.settings`.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Sequence
from datetime import time

PROCESS_ROLES = ("web", "worker", "beat", "statsd", "cli")


class ConfigError(SystemExit):
    """Raised at import time for a bad or missing variable; exits with the message alone."""

    def __init__(self, message: str) -> None:
        super().__init__(f"glowing-fiesta: configuration error: {message}")


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default).strip()


def env_bool(name: str, default: bool = False) -> bool:
    raw = env_str(name)
    if not raw:
        return default
    if raw.lower() in {"1", "true", "yes", "on"}:
        return True
    if raw.lower() in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{name} must be true or false, not {raw!r}")


def env_int(name: str, default: int, *, minimum: int, maximum: int) -> int:
    raw = env_str(name)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer from {minimum} to {maximum}") from None
    if not minimum <= value <= maximum:
        raise ConfigError(f"{name} must be an integer from {minimum} to {maximum}, not {value}")
    return value


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in env_str(name, default).split(",") if item.strip()]


def env_required(name: str, *, hint: str) -> str:
    """A variable without which the service cannot start; `hint` says where one comes from."""
    value = env_str(name)
    if not value:
        raise ConfigError(f"{name} must be set ({hint})")
    return value


def env_secret(name: str, *, debug: bool, placeholder: str) -> str:
    """A secret: required with DEBUG off; with DEBUG on, a development placeholder stands in."""
    value = env_str(name)
    if not value and not debug:
        raise ConfigError(f"{name} must be set when DJANGO_DEBUG is off")
    return value or placeholder


def _choice(name: str, value: str, choices: Sequence[str]) -> str:
    if value not in choices:
        listed = f"{', '.join(choices[:-1])} or {choices[-1]}"
        raise ConfigError(f"{name} must be {listed}, not {value!r}")
    return value


def env_choice(name: str, default: str, choices: Sequence[str], *, upper: bool = False) -> str:
    """One of `choices` (compared in upper case with `upper`). Set but empty is refused."""
    value = env_str(name, default)
    return _choice(name, value.upper() if upper else value, choices)


def role_from_argv(argv: list[str]) -> str:
    """web, worker, beat or statsd from how the process was started; cli for anything else."""
    # argv[0] is the script: .../bin/gunicorn, or .../gunicorn/__main__.py under `python -m`.
    program = argv[0] if argv else ""
    if "gunicorn" in program or argv[1:2] == ["runserver"]:
        return "web"
    if argv[1:2] == ["statsd"]:
        return "statsd"
    if "celery" in program and "worker" in argv:
        return "worker"
    if "celery" in program and "beat" in argv:
        return "beat"
    return "cli"


def env_process_role(name: str, argv: list[str]) -> str:
    """What this process is: the variable, or else told apart from the command line."""
    return _choice(name, env_str(name) or role_from_argv(argv), PROCESS_ROLES)


def env_header_name(name: str) -> str:
    """An HTTP header name such as X-Forwarded-Proto, or "" when unset."""
    value = env_str(name)
    if value and not re.fullmatch(r"[A-Za-z0-9-]+", value):
        raise ConfigError(f"{name} must be a header name such as X-Forwarded-Proto, not {value!r}")
    return value


def env_origins(name: str, default: str) -> list[str]:
    """A comma-separated list of web origins (scheme, host, optional port)."""
    origins = env_list(name, default)
    for origin in origins:
        if not re.fullmatch(r"https?://[A-Za-z0-9.-]+(:\d{1,5})?", origin):
            raise ConfigError(
                f"{name} must list origins such as https://app.example.com, not {origin!r}"
            )
    return origins


def env_rate(name: str, default: str) -> str:
    """COUNT/PERIOD (period s, m, h, d or sec, second, min, minute, hour, day), returned in
    django-ratelimit's short form: 100/minute is 100/m."""
    raw = env_str(name, default)
    match = re.fullmatch(r"([1-9]\d{0,6})/(s|m|h|d|sec|second|min|minute|hour|day)", raw)
    if not match:
        raise ConfigError(
            f"{name} must be COUNT/PERIOD such as 100/minute (period s, m, h or d), not {raw!r}"
        )
    return f"{match[1]}/{match[2][0]}"


def env_time(name: str, default: str) -> time:
    """A time of day, strictly HH:MM: fromisoformat alone would also take seconds or a UTC
    offset, which a daily schedule (hour and minute, in UTC) would silently ignore."""
    raw = env_str(name, default)
    try:
        if len(raw) != 5 or raw[2] != ":":
            raise ValueError(raw)
        return time.fromisoformat(raw)
    except ValueError:
        raise ConfigError(f"{name} must be HH:MM (UTC), not {raw!r}") from None


_HOST_RE = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)


def env_host_port(raw: str) -> tuple[str, int]:
    """HOST:PORT or [IPv6]:PORT as (host, port); ValueError saying what is wrong."""
    host, sep, port = raw.rpartition(":")
    if not sep or not host:
        raise ValueError("no host")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        ipaddress.IPv6Address(host)
    elif ":" in host:
        raise ValueError("an IPv6 address goes in brackets")
    elif not _HOST_RE.fullmatch(host):
        raise ValueError("the host is not an IPv4 address or a host name")
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError("the port must be 1 to 65535")
    return host, int(port)


def env_address(name: str, default: str) -> tuple[str, int]:
    """A socket address, HOST:PORT or [IPv6]:PORT, as (host, port)."""
    raw = env_str(name, default)
    try:
        return env_host_port(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be HOST:PORT or [IPv6]:PORT, not {raw!r}: {exc}") from None


def env_writable_dir(name: str) -> str:
    """A directory this process can write to, or "" when unset."""
    value = env_str(name)
    if value and not (os.path.isdir(value) and os.access(value, os.W_OK)):
        raise ConfigError(f"{name} must be a writable directory, not {value!r}")
    return value


def env_file(name: str) -> str:
    """A file path in an existing directory (the file itself may not exist yet), or ""."""
    value = env_str(name)
    if value and not os.path.isdir(os.path.dirname(os.path.abspath(value))):
        raise ConfigError(f"{name} must be in an existing directory, not {value!r}")
    return value
