from django.contrib import admin
from django.templatetags.static import static
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView

from metrics.views.influx import InfluxV1WriteView
from metrics.views.otlp import OtlpMetricsView

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
    # InfluxDB 1.x clients write to /write at the root of the server.
    path("write", InfluxV1WriteView.as_view(), name="influx-v1-write"),
    # Before admin.site.urls: failed logins are counted per client address.
    path("admin/login/", bruteforce.admin_login, name="admin-login"),
    # GET /metrics, the service's own figures for Prometheus.
    path("", include("selfmetrics.urls")),
    path("admin/", admin.site.urls),
    # OTLP/HTTP's standard path, where exporters send by default (endpoint + /v1/metrics).
    path("v1/metrics", OtlpMetricsView.as_view(), name="otlp-metrics"),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", docs.swagger, name="docs"),
    path("api/redoc/", docs.redoc, name="redoc"),
    path("", include("promql.urls")),
    path("api/", include("metrics.urls")),
    path("api/", include("apikeys.urls")),
]

handler400 = "glowing_fiesta.exceptions.bad_request"
handler403 = "glowing_fiesta.exceptions.permission_denied"
handler404 = "glowing_fiesta.exceptions.not_found"
handler500 = "glowing_fiesta.exceptions.server_error"
