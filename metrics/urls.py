from django.urls import path

from . import views, views_batches
from .query import SeriesQueryView

urlpatterns = [
    path("metrics/counter", views.CounterView.as_view(), name="metric-counter"),
    path("metrics/value", views.ValueView.as_view(), name="metric-value"),
    path("metrics/batch", views.BatchView.as_view(), name="metric-batch"),
    path("batches/<int:batch_id>", views_batches.BatchStatusView.as_view(), name="ingest-batch"),
    # Last: any other metrics/... route above wins over a metric of the same name.
    path("metrics/<path:name>", SeriesQueryView.as_view(), name="metric-query"),
]
