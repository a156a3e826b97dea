from django.contrib import admin
from django.templatetags.static import static
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView

from . import bruteforce, docs, health

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    # Browsers ask for it on every page (the admin has no icon of its own).
    path(
        "favicon.ico",
        RedirectView.as_view(
            url=static("drf_spectacular_sidecar/swagger-ui-dist/favicon-32x32.png"), permanent=True
        ),
    ),
    path("readyz", health.readyz, name="readyz"),
    # Before admin.site.urls: failed logins are counted per client address.
    path("admin/login/", bruteforce.admin_login, name="admin-login"),
    # GET /metrics, the service's own figures for Prometheus.
    path("", include("selfmetrics.urls")),
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", docs.swagger, name="docs"),
    path("api/redoc/", docs.redoc, name="redoc"),
    # The wire formats of other tools: /write, /api/v2/write, /api/v1/write, /v1/metrics.
    path("", include("protocols.urls")),
    # Prometheus's /api/v1/rules and /api/v1/alerts: the rule files the service evaluates.
    path("", include("alerting.urls")),
    # The Prometheus HTTP query API: /api/v1/query, query_range, series, labels, metadata, …
    path("", include("promql.urls")),
    path("api/", include("metrics.urls")),
    path("api/", include("apikeys.urls")),
]

handler400 = "glowing_fiesta.exceptions.bad_request"
handler403 = "glowing_fiesta.exceptions.permission_denied"
handler404 = "glowing_fiesta.exceptions.not_found"
handler500 = "glowing_fiesta.exceptions.server_error"
