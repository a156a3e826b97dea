"""The Prometheus HTTP API, under /api/v1/ beside remote write."""

from django.urls import path

from .views import query, series, status

urlpatterns = [
    path("api/v1/query", query.QueryView.as_view(), name="prometheus-query"),
    path("api/v1/query_range", query.QueryRangeView.as_view(), name="prometheus-query-range"),
    path("api/v1/series", series.SeriesView.as_view(), name="prometheus-series"),
    path("api/v1/labels", series.LabelsView.as_view(), name="prometheus-labels"),
    path(
        "api/v1/label/<str:name>/values",
        series.LabelValuesView.as_view(),
        name="prometheus-label-values",
    ),
    path("api/v1/metadata", series.MetadataView.as_view(), name="prometheus-metadata"),
    path("api/v1/status/buildinfo", status.BuildInfoView.as_view(), name="prometheus-buildinfo"),
    path("api/v1/query_exemplars", status.ExemplarsView.as_view(), name="prometheus-exemplars"),
]
