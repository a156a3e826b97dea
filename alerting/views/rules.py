"""GET /api/v1/rules and /api/v1/alerts: the rule groups and alerts in Prometheus's shape, read
by Grafana's alert list and by promtool."""

from __future__ import annotations

from typing import Any

from django.http import HttpResponse
from rest_framework.request import Request

from promql import render
from promql.errors import BadData
from promql.views.base import GetOrPostView

from ..selectors import alerts_active, rules_overview

_KINDS = {"": "", "alert": "alert", "record": "record"}


# Rules read every metric and alerts carry their labels: a key limited to some metric-name
# prefixes (namespaces) sees neither, rather than another namespace's data.


class RulesView(GetOrPostView):
    def answer(self, request: Request, **kwargs: Any) -> HttpResponse:
        kind = self.params(request).get("type", "")
        if kind not in _KINDS:
            raise BadData(f'invalid parameter "type": {kind!r} is not "alert" or "record"')
        groups = [] if self.namespaces(request) else rules_overview(kind=kind)
        return render.answer({"groups": groups})


class AlertsView(GetOrPostView):
    def answer(self, request: Request, **kwargs: Any) -> HttpResponse:
        return render.answer({"alerts": [] if self.namespaces(request) else alerts_active()})
