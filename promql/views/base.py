"""The base of every Prometheus HTTP API view: the key's `read` scope, GET and form-encoded
POST alike, and every error in Prometheus's own shape,
`{"status": "error", "errorType": …, "error": …}`, which Grafana and promtool read."""

from __future__ import annotations

import logging
from typing import Any

from django.http import HttpResponse, QueryDict
from drf_spectacular.utils import extend_schema
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response

from apikeys.base import ApiKeyView
from apikeys.models import Scope
from glowing_fiesta.exceptions import problem_exception_handler

from ..errors import PromQLError
from ..render import error

logger = logging.getLogger(__name__)

# errorType for a status that no PromQL error names (authentication, rate limit, outages).
_ERROR_TYPES = {
    400: "bad_data",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "bad_data",
    406: "not_acceptable",
    413: "bad_data",
    415: "bad_data",
    422: "execution",
    429: "too_many_requests",
    503: "unavailable",
}
_KEPT_HEADERS = ("Retry-After", "WWW-Authenticate")


class PrometheusView(ApiKeyView):
    required_scope = Scope.READ
    parser_classes = [FormParser, MultiPartParser]
    renderer_classes = [JSONRenderer]

    def params(self, request: Request) -> QueryDict:
        """The query string and a form body together, as Prometheus's r.FormValue reads them."""
        merged = request.query_params.copy()
        if request.method == "POST":
            for name, values in request.data.lists():
                merged.setlist(name, merged.getlist(name) + values)
        return merged

    @staticmethod
    def namespaces(request: Request) -> tuple[str, ...]:
        """The metric-name prefixes the calling key may read (none: every metric)."""
        return request.auth.namespace_prefixes

    def handle_exception(self, exc: Exception) -> Response:
        if isinstance(exc, PromQLError):
            return Response(error(exc.error_type, exc.message), status=exc.status)
        context = self.get_exception_handler_context()
        problem = problem_exception_handler(exc, context)
        if problem is None:
            raise exc  # an unknown failure: Django logs it and answers 500
        message = problem.data.get("detail") or problem.data.get("title", "")
        headers = {name: problem[name] for name in _KEPT_HEADERS if problem.has_header(name)}
        kind = _ERROR_TYPES.get(problem.status_code, "internal")
        return Response(error(kind, message), status=problem.status_code, headers=headers)


class GetOrPostView(PrometheusView):
    """An endpoint Prometheus serves on GET and on form-encoded POST alike."""

    @extend_schema(exclude=True)
    def get(self, request: Request, **kwargs: Any) -> HttpResponse:
        return self.answer(request, **kwargs)

    @extend_schema(exclude=True)
    def post(self, request: Request, **kwargs: Any) -> HttpResponse:
        return self.answer(request, **kwargs)

    def answer(self, request: Request, **kwargs: Any) -> HttpResponse:
        raise NotImplementedError


def as_list(params: QueryDict, name: str) -> list[str]:
    return [value for value in params.getlist(name) if value != ""]
