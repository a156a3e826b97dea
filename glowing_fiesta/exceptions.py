"""Every error, one shape: RFC 9457 problem details as `application/problem+json`.

Domain errors are exceptions (subclasses of `Problem`) raised by services; DRF's own exceptions,
Django's 404/403/400/500 and oversized bodies are mapped here too, so a client parses one format.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from typing import Any

import psycopg.errors
from django.conf import settings
from django.core.exceptions import (
    DisallowedHost,
    PermissionDenied,
    RequestDataTooBig,
    TooManyFieldsSent,
)
from django.db import InterfaceError, OperationalError
from django.http import Http404, HttpRequest, JsonResponse
from django_ratelimit.exceptions import Ratelimited
from rest_framework import exceptions as drf_exceptions
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response

from . import monitoring

PROBLEM_CONTENT_TYPE = "application/problem+json"
TYPE_PREFIX = "urn:glowing-fiesta:problem:"

logger = logging.getLogger(__name__)


class Problem(Exception):
    """A domain error with an HTTP status; subclasses name the problem type."""

    status = 400
    slug = "bad-request"
    title = "Bad request"

    def __init__(
        self,
        detail: str,
        *,
        errors: list[dict[str, Any]] | None = None,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})


def problem_body(
    status: int,
    slug: str,
    title: str,
    detail: str,
    errors: list[dict[str, Any]] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": TYPE_PREFIX + slug,
        "title": title,
        "status": status,
        "detail": detail,
    }
    if errors:
        body["errors"] = errors
    if extra:
        body.update(extra)
    return body


def problem_response(problem: Problem) -> Response:
    body = problem_body(
        problem.status, problem.slug, problem.title, problem.detail, problem.errors, problem.extra
    )
    return Response(
        body, status=problem.status, headers=problem.headers, content_type=PROBLEM_CONTENT_TYPE
    )


def flatten_errors(detail: Any, path: tuple[str | int, ...] = ()) -> list[dict[str, Any]]:
    """Turn DRF's nested error detail into a flat list of {"field", "message"}."""
    if isinstance(detail, Mapping):
        out: list[dict[str, Any]] = []
        for key, value in detail.items():
            sub = () if key == "non_field_errors" else (key,)
            out.extend(flatten_errors(value, path + sub))
        return out
    if isinstance(detail, list):
        if all(isinstance(item, str) for item in detail):
            field = ".".join(str(p) for p in path) or None
            return [{"field": field, "message": str(item)} for item in detail]
        out = []
        for index, item in enumerate(detail):
            if item:
                out.extend(flatten_errors(item, (*path, index)))
        return out
    return [{"field": ".".join(str(p) for p in path) or None, "message": str(detail)}]


class InvalidInput(Problem):
    """A request whose fields break the rules; `errors` lists every one of them."""

    status = 400
    slug = "invalid-input"
    title = "Invalid input"


class TooManyRequests(Problem):
    status = 429
    slug = "rate-limited"
    title = "Too many requests"


class PayloadTooLarge(Problem):
    status = 413
    slug = "payload-too-large"
    title = "Payload too large"


class DatabaseUnavailable(Problem):
    """PostgreSQL is unreachable, or a statement or lock wait ran out of time: retry later."""

    status = 503
    slug = "database-unavailable"
    title = "Database unavailable"


# Seconds a client is asked to wait after the database failed it: about how long a restart or
# a failover takes, and long enough for a lock holder to finish.
DATABASE_RETRY_AFTER_SECONDS = 2


def _database_problem(exc: Exception) -> DatabaseUnavailable:
    # Raised through Django's cursors (wrapped) or psycopg's own (the cause, or the error itself).
    cause = exc.__cause__ if isinstance(exc.__cause__, psycopg.Error) else exc
    if isinstance(cause, psycopg.errors.LockNotAvailable):
        detail = "The write waited too long for a database lock; retry shortly."
    elif isinstance(cause, psycopg.errors.QueryCanceled):
        detail = "The database took too long to answer; retry shortly."
    else:
        detail = "The database cannot be reached right now; retry shortly."
    logger.warning("database unavailable", extra={"error": type(cause).__name__}, exc_info=exc)
    return DatabaseUnavailable(detail, headers={"Retry-After": str(DATABASE_RETRY_AFTER_SECONDS)})


class HttpsRequired(Problem):
    status = 403
    slug = "https-required"
    title = "HTTPS required"


class LengthRequired(Problem):
    status = 411
    slug = "length-required"
    title = "Length required"


class BodyIncomplete(Problem):
    """The request body ended before its Content-Length, or a chunked body before its last
    chunk: the connection dropped mid-upload. Nothing of it may be stored (400)."""

    status = 400
    slug = "body-incomplete"
    title = "Body incomplete"


# DRF's default details hold placeholders ({method}, {media_type}) that make poor titles.
_TITLES = {
    drf_exceptions.MethodNotAllowed: "Method not allowed",
    drf_exceptions.UnsupportedMediaType: "Unsupported media type",
    drf_exceptions.NotAcceptable: "Not acceptable",
}


def _to_problem(exc: Exception) -> Problem | None:
    if isinstance(exc, Problem):
        return exc
    if isinstance(exc, OperationalError | InterfaceError | psycopg.OperationalError):
        return _database_problem(exc)
    if isinstance(exc, RequestDataTooBig):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE // 1024
        return PayloadTooLarge(f"The request body is larger than the {limit} KiB limit.")
    if isinstance(exc, Ratelimited):
        return TooManyRequests("The rate limit for this API key is exhausted.")
    if isinstance(exc, Http404):
        exc = drf_exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = drf_exceptions.PermissionDenied()
    if not isinstance(exc, drf_exceptions.APIException):
        return None
    problem = Problem(str(exc.detail) if isinstance(exc.detail, str) else "")
    problem.status = exc.status_code
    problem.slug = exc.default_code.replace("_", "-")
    problem.title = _TITLES.get(type(exc)) or str(exc.default_detail).rstrip(".")
    if isinstance(exc, drf_exceptions.ValidationError):
        # Query strings and bodies break rules the same way: one problem type for both.
        problem.slug, problem.title = InvalidInput.slug, InvalidInput.title
    if isinstance(exc.detail, dict | list):
        problem.errors = flatten_errors(exc.detail)
        problem.detail = "; ".join(
            f"{e['field']}: {e['message']}" if e["field"] else e["message"] for e in problem.errors
        )
    headers = {}
    if getattr(exc, "auth_header", None):
        headers["WWW-Authenticate"] = exc.auth_header
    if getattr(exc, "wait", None) is not None:
        headers["Retry-After"] = str(int(exc.wait))
    problem.headers = headers
    return problem


def problem_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's EXCEPTION_HANDLER: any known error becomes problem+json; others become a 500."""
    problem = _to_problem(exc)
    monitoring.problem_observed(exc=exc, problem=problem, context=context)
    if problem is None:
        return None  # Django's handler500 below renders it, after logging the traceback.
    request = context.get("request")
    if request is not None:
        # A view rendering YAML or HTML (the schema, the docs) still answers errors in JSON.
        request.accepted_renderer = JSONRenderer()
    return problem_response(problem)


def problem_http_response(problem: Problem) -> JsonResponse:
    """A Problem as a plain Django response, for middleware and views outside DRF."""
    body = problem_body(
        problem.status, problem.slug, problem.title, problem.detail, problem.errors, problem.extra
    )
    return JsonResponse(
        body, status=problem.status, headers=problem.headers, content_type=PROBLEM_CONTENT_TYPE
    )


def _django_problem(status: int, slug: str, title: str, detail: str) -> JsonResponse:
    return JsonResponse(
        problem_body(status, slug, title, detail), status=status, content_type=PROBLEM_CONTENT_TYPE
    )


def bad_request(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    if isinstance(exception, DisallowedHost):
        return _django_problem(
            400, "host-not-allowed", "Host not allowed", "This server does not answer to that Host."
        )
    if isinstance(exception, RequestDataTooBig):
        return _django_problem(
            413, "payload-too-large", "Payload too large", "The request body is too large."
        )
    if isinstance(exception, TooManyFieldsSent):
        return _django_problem(400, "bad-request", "Bad request", "Too many fields were sent.")
    return _django_problem(400, "bad-request", "Bad request", "The request could not be read.")


def csrf_failure(request: HttpRequest, reason: str = "") -> JsonResponse:
    """CSRF_FAILURE_VIEW: a form post without a valid CSRF token (API calls never need one)."""
    return _django_problem(
        403, "csrf-failed", "CSRF verification failed", f"CSRF verification failed: {reason}"
    )


def method_not_allowed(request: HttpRequest, allowed: list[str]) -> JsonResponse:
    response = _django_problem(
        405, "method-not-allowed", "Method not allowed", f"{request.method} is not allowed here."
    )
    response["Allow"] = ", ".join(allowed)
    return response


def permission_denied(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    if isinstance(exception, Ratelimited):
        return _django_problem(429, "rate-limited", "Too many requests", "Rate limit exhausted.")
    return _django_problem(403, "permission-denied", "Forbidden", "You may not do this.")


def not_found(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return _django_problem(404, "not-found", "Not found", f"Nothing lives at {request.path}.")


def server_error(request: HttpRequest) -> JsonResponse:
    # Django calls this while handling the exception: a database outage outside a DRF view
    # (a session lookup in the admin, say) is a 503 too, not a 500.
    exc = sys.exc_info()[1]
    if isinstance(exc, OperationalError | InterfaceError | psycopg.OperationalError):
        problem = _database_problem(exc)
        response = _django_problem(problem.status, problem.slug, problem.title, problem.detail)
        for name, value in problem.headers.items():
            response[name] = value
        return response
    return _django_problem(
        500, "server-error", "Internal server error", "The server failed; it has been logged."
    )
