"""OpenAPI pieces shared by every app: the problem document and its error responses.

Every error is declared with its real media type, application/problem+json, and the Problem
schema, so a client generated from /api/schema/ (or a fuzzer) checks errors as strictly as
successes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers

from .exceptions import PROBLEM_CONTENT_TYPE


class ProblemError(serializers.Serializer):
    field = serializers.CharField(allow_null=True)
    message = serializers.CharField()


class Problem(serializers.Serializer):
    """RFC 9457 problem details; some problems add members of their own."""

    type = serializers.CharField(help_text="urn:glowing-fiesta:problem:<slug>")
    title = serializers.CharField()
    status = serializers.IntegerField()
    detail = serializers.CharField()
    errors = ProblemError(many=True, required=False, help_text="Every field that broke a rule.")


def problem_responses(descriptions: Mapping[int, str]) -> dict[tuple[int, str], Any]:
    """`{status: description}` as drf-spectacular responses with the problem media type."""
    return {
        (status, PROBLEM_CONTENT_TYPE): OpenApiResponse(Problem, description=description)
        for status, description in descriptions.items()
    }


# Any operation called with an API key can answer these.
KEYED_ERRORS = problem_responses(
    {
        401: "The API key is missing, invalid, revoked or expired, or was sent in the URL",
        403: "The API key lacks the scope the operation needs, or the call came over plain HTTP",
        429: "The key's rate limit, or this address's failed-authentication limit, is "
        "exhausted (Retry-After)",
        503: "The database is unavailable or too slow (Retry-After)",
    }
)


def request_bodies_required(result: dict, generator: Any, request: Any, public: bool) -> dict:
    """A drf-spectacular postprocessing hook: every request body of this API is required.

    Bodies are declared as JSON Schema (metrics.serializers.ingest), for which drf-spectacular cannot
    tell; a POST without a body is answered 400 (or 415), so the schema says so.
    """
    for operations in result.get("paths", {}).values():
        for operation in operations.values():
            if isinstance(operation, dict) and "requestBody" in operation:
                operation["requestBody"]["required"] = True
    return result
