"""GET /metrics: every figure in the Prometheus text format, for a key with the read scope.

Prometheus sends the key as `Authorization: Bearer <key>` (deploy/prometheus/prometheus.yml);
X-API-Key works too. Under PROMETHEUS_MULTIPROC_DIR the figures are the sum over every process
that writes to that directory; the gauges of collectors.py are read at each scrape.

Every known series of the labelled counters is there from the first scrape, at 0
(glowing_fiesta/monitoring/figures.py): the process serving the scrape makes sure of them
itself, whatever it recorded so far (a few dictionary lookups once they exist).
"""

from __future__ import annotations

from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.multiprocess import MultiProcessCollector
from rest_framework.request import Request

from apikeys.base import ApiKeyView
from apikeys.models import Scope
from apikeys.namespaces import SELF_NAMESPACE, NamespaceForbidden, namespace_allows
from glowing_fiesta.monitoring import figures, multiproc

from .collectors import ScrapeTimeCollector


def exposition() -> bytes:
    """The text of one scrape."""
    figures.counters_zero()
    path = multiproc.directory()
    if path is None:
        # One process: its own registry (with the process and platform collectors).
        return generate_latest(REGISTRY) + generate_latest(_scrape_time_registry())
    registry = _scrape_time_registry()
    MultiProcessCollector(registry, path=str(path))
    return generate_latest(registry)


def _scrape_time_registry() -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ScrapeTimeCollector())
    return registry


class PrometheusMetricsView(ApiKeyView):
    """The service's own figures for a Prometheus scrape. Needs the read scope, and a key
    whose namespaces cover glowing_fiesta. (or that has none): the figures are those of the
    glowing_fiesta.* metrics; any other key gets 403 namespace-forbidden."""

    required_scope = Scope.READ

    @extend_schema(
        summary="The service's own figures, in the Prometheus text format",
        responses={
            (200, "text/plain"): OpenApiResponse(OpenApiTypes.STR, description="Exposition"),
            401: OpenApiResponse(description="No valid API key"),
            403: OpenApiResponse(
                description="The key lacks the read scope, or its namespaces do not cover "
                "glowing_fiesta."
            ),
        },
    )
    def get(self, request: Request) -> HttpResponse:
        if not namespace_allows(request.auth.namespace_prefixes, SELF_NAMESPACE):
            raise NamespaceForbidden(
                f"The service's own figures are the {SELF_NAMESPACE}* metrics, outside this API "
                "key's namespaces."
            )
        return HttpResponse(exposition(), content_type=CONTENT_TYPE_LATEST)
