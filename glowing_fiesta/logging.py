"""JSON logs, one object per line, with the request's id, and an access log line per request.

Nothing from the X-API-Key header is ever logged: the access log records the path without its
query string, and no header values. Every line logged while a request is served carries its
`request_id` and, once the request's key has been read, that key's public `api_key_prefix`.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Callable
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from django.http import HttpRequest, HttpResponse

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)
# Set by API-key authentication (apikeys/authentication.py) from a well-formed key.
api_key_prefix_var: ContextVar[str | None] = ContextVar("api_key_prefix", default=None)

_REQUEST_ID_OK = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_STANDARD_ATTRS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "request_id"}
_STANDARD_ATTRS.add("api_key_prefix")

access_logger = logging.getLogger("glowing_fiesta.access")


class RequestContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        # Only within a request (the middleware sets and resets both): authentication called
        # outside one must not name its key on unrelated lines.
        if record.request_id and getattr(record, "api_key_prefix", None) is None:
            record.api_key_prefix = api_key_prefix_var.get()
        return True


class JsonFormatter(logging.Formatter):
    """Render a record as one JSON object; `extra={...}` fields become top-level keys."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None)
        if request_id:
            payload["request_id"] = request_id
        prefix = getattr(record, "api_key_prefix", None)
        if prefix:
            payload["api_key_prefix"] = prefix
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                payload[key] = value
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


class RequestLogMiddleware:
    """Assign a request id (or keep a well-formed incoming X-Request-ID) and log each request."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        incoming = request.headers.get("X-Request-ID", "")
        request_id = incoming if _REQUEST_ID_OK.match(incoming) else uuid.uuid4().hex
        token = request_id_var.set(request_id)
        # A previous request's key must not be named in this one's lines.
        prefix_token = api_key_prefix_var.set(None)
        started = time.perf_counter()
        try:
            response = self.get_response(request)
            response["X-Request-ID"] = request_id
            access_logger.info(
                "request",
                extra={
                    "method": request.method,
                    "path": request.path,
                    "status": response.status_code,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                },
            )
            return response
        finally:
            request_id_var.reset(token)
            api_key_prefix_var.reset(prefix_token)


# Libraries that log at INFO per connection or per message; their warnings still show.
CHATTY_LOGGERS = (
    "amqp",
    "asyncio",
    "celery.app.trace",
    "celery.worker.strategy",
    "django.db.backends",
    "kombu",
    "psycopg",
    "redis",
    "urllib3",
)


def logging_config(*, level: str, file: str) -> dict[str, Any]:
    """The LOGGING setting: JSON lines at `level` on stdout and, when `file` is set, in it too."""
    handlers: dict[str, dict[str, Any]] = {
        "stdout": {
            "class": "logging.StreamHandler",
            "stream": "ext://sys.stdout",
            "formatter": "json",
            "filters": ["request"],
        }
    }
    if file:
        # WatchedFileHandler notices that logrotate renamed the file and opens a new one, so no
        # signal or copytruncate is needed (deploy/logrotate/glowing-fiesta).
        handlers["file"] = {
            "class": "logging.handlers.WatchedFileHandler",
            "filename": file,
            "formatter": "json",
            "filters": ["request"],
        }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request": {"()": "glowing_fiesta.logging.RequestContextFilter"}},
        "formatters": {"json": {"()": "glowing_fiesta.logging.JsonFormatter"}},
        "handlers": handlers,
        "root": {"handlers": list(handlers), "level": level},
        "loggers": {
            # Our own access log replaces Django's, which would log the query string.
            "django.server": {"handlers": [], "propagate": False},
            "django.request": {"level": "ERROR"},
            **{name: {"level": "WARNING"} for name in CHATTY_LOGGERS},
        },
    }
