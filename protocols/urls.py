from django.urls import path

from .views import influx, otlp, remote_write

urlpatterns = [
    # InfluxDB 1.x clients write to /write at the root of the server.
    path("write", influx.InfluxV1WriteView.as_view(), name="influx-v1-write"),
    path("api/v2/write", influx.InfluxV2WriteView.as_view(), name="influx-v2-write"),
    path("api/v1/write", remote_write.RemoteWriteView.as_view(), name="remote-write"),
    # OTLP/HTTP's standard path, where exporters send by default (endpoint + /v1/metrics).
    path("v1/metrics", otlp.OtlpMetricsView.as_view(), name="otlp-metrics"),
]
