from django.urls import path

from .views import batches, discovery, ingest, series

urlpatterns = [
    path("metrics", discovery.MetricListView.as_view(), name="metric-list"),
    path("series", discovery.SeriesListView.as_view(), name="series-list"),
    path("tags", discovery.TagListView.as_view(), name="tag-list"),
    path("metrics/counter", ingest.CounterView.as_view(), name="metric-counter"),
    path("metrics/value", ingest.ValueView.as_view(), name="metric-value"),
    path("metrics/batch", ingest.BatchView.as_view(), name="metric-batch"),
    path("batches/<int:batch_id>", batches.BatchStatusView.as_view(), name="ingest-batch"),
    # Last: any other metrics/... route above wins over a metric of the same name.
    path("metrics/<path:name>", series.SeriesQueryView.as_view(), name="metric-query"),
]
