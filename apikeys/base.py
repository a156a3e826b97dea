"""The base view for endpoints called with an API key, and the key's own endpoint.

Subclass `ApiKeyView` and set `required_scope`:

    class CounterView(ApiKeyView):
        required_scope = Scope.WRITE  # or "write"; Scope.READ / "read"; None = any valid key

        def post(self, request): ...

`request.auth` (and `request.user`) is then the caller's `ApiKey`, and every response after
authentication carries X-RateLimit-Limit, X-RateLimit-Remaining and X-RateLimit-Reset.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ImproperlyConfigured
from drf_spectacular.utils import extend_schema
from rest_framework.permissions import SAFE_METHODS
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from glowing_fiesta.db import replica
from glowing_fiesta.openapi import KEYED_ERRORS

from .authentication import AUTH_FAILURES_UNCHECKED, ApiKeyAuthentication
from .models import Scope
from .permissions import HasApiKey, HasScope
from .ratelimit import RateUsage, ratelimit_enforce
from .serializers import ApiKeyOutput
from .services import apikey_mark_used


class ApiKeyView(APIView):
    """API-key authentication, a scope check and the key's rate limit, with its headers."""

    authentication_classes = [ApiKeyAuthentication]
    permission_classes = [HasApiKey, HasScope]
    required_scope: str | None = None

    rate_usage: RateUsage | None = None
    # The rate limit's round trip also reads the address's failed authentications when
    # ApiKeyAuthentication left them unchecked (apikeys/ratelimit.py).
    reads_auth_failures = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.required_scope is not None and cls.required_scope not in Scope.values:
            raise ImproperlyConfigured(
                f"{cls.__name__}.required_scope must be one of {Scope.values} or None"
            )

    def check_permissions(self, request: Request) -> None:
        # Counted before the scope check rather than in check_throttles (which DRF runs after
        # it), so that refused requests count against the key and carry the headers as well.
        if request.auth is not None:
            replica.request_key_set(request.auth.pk)
            unchecked = getattr(request, AUTH_FAILURES_UNCHECKED, None)
            self.rate_usage = ratelimit_enforce(
                request=request, key=request.auth, check_failures=unchecked is not None
            )
            if unchecked is not None:
                apikey_mark_used(key=request.auth, now=unchecked)
        super().check_permissions(request)

    def finalize_response(
        self, request: Request, response: Response, *args: Any, **kwargs: Any
    ) -> Response:
        response = super().finalize_response(request, response, *args, **kwargs)
        replica.request_key_set(None)
        # Read-your-writes: after a write the key's reads go to the primary until a replica
        # within its lag bound has it (a 202's points are marked by the worker that writes them).
        if (
            request.auth is not None
            and request.method not in SAFE_METHODS
            and 200 <= response.status_code < 300
        ):
            replica.writes_mark(request.auth.pk)
        if self.rate_usage is not None:
            for name, value in self.rate_usage.headers().items():
                response[name] = value
        return response


class KeyMeView(ApiKeyView):
    """The calling key's own settings: a cheap way for a client to check its key."""

    required_scope = None

    @extend_schema(
        responses={200: ApiKeyOutput, **KEYED_ERRORS}, summary="Describe the calling API key"
    )
    def get(self, request: Request) -> Response:
        return Response(ApiKeyOutput(request.auth).data)
