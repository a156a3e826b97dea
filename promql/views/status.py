"""What Grafana asks of a Prometheus data source besides queries: build information and
exemplars (rules and alerts are the alerting app's)."""

from __future__ import annotations

from importlib.metadata import version
from typing import Any

from django.http import HttpResponse
from drf_spectacular.utils import extend_schema
from rest_framework.request import Request

from .. import render
from .base import GetOrPostView, PrometheusView

# The Prometheus release whose PromQL this API is compared against (docs/PROMQL.md). No
# "features" field: with it Grafana would take the source for Mimir.
COMPATIBLE_VERSION = "2.42.0"


class BuildInfoView(PrometheusView):
    @extend_schema(exclude=True)
    def get(self, request: Request) -> HttpResponse:
        return render.answer(
            {
                "version": COMPATIBLE_VERSION,
                "revision": version("glowing-fiesta"),
                "branch": "",
                "buildUser": "glowing-fiesta",
                "buildDate": "",
                "goVersion": "",
            }
        )


class _Empty(GetOrPostView):
    body: Any = None

    def answer(self, request: Request, **kwargs: Any) -> HttpResponse:
        return render.answer(self.body)


class ExemplarsView(_Empty):
    body = []
