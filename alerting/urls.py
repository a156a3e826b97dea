"""The rules and alerts of the Prometheus HTTP API, routed before promql's other endpoints."""

from django.urls import path

from .views import rules

urlpatterns = [
    path("api/v1/rules", rules.RulesView.as_view(), name="prometheus-rules"),
    path("api/v1/alerts", rules.AlertsView.as_view(), name="prometheus-alerts"),
]
