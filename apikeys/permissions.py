"""Permissions for API-key views: a key must be present, and carry the view's scope."""

from __future__ import annotations

from rest_framework import exceptions
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.views import APIView

from glowing_fiesta import monitoring

from .authentication import ApiKeyMissing
from .models import ApiKey


class InsufficientScope(exceptions.PermissionDenied):
    default_detail = "The API key lacks the scope this endpoint requires."
    default_code = "insufficient_scope"


class HasApiKey(BasePermission):
    """Any valid key. Raises rather than returning False, so the 401 says "missing"."""

    def has_permission(self, request: Request, view: APIView) -> bool:
        if isinstance(request.auth, ApiKey):
            return True
        monitoring.auth_failure("missing")
        raise ApiKeyMissing()


class HasScope(BasePermission):
    """The key carries `view.required_scope` (no requirement when it is None)."""

    def has_permission(self, request: Request, view: APIView) -> bool:
        scope = getattr(view, "required_scope", None)
        if scope is None or (isinstance(request.auth, ApiKey) and request.auth.has_scope(scope)):
            return True
        monitoring.auth_failure("insufficient_scope")
        raise InsufficientScope(f"This endpoint needs an API key with the '{scope}' scope.")
