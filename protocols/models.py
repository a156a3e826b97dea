"""The protocols' own state: the last total of each cumulative counter stream."""

from __future__ import annotations

from django.db import models


class CumulativeStream(models.Model):
    """The last point seen of one cumulative counter stream, to turn running totals into increments.

    OpenTelemetry exporters and Prometheus send counters as totals since the sender started; the
    service stores increments, so it keeps each stream's last total here, in PostgreSQL, where
    any web process can take the next export (`protocols.cumulative.streams_advance`). `key` is the
    md5 of the stream's identity: resource, scope, metric and attributes for OTLP, the label set
    for remote write. Streams not updated for RETENTION_DAYS are removed by the retention run.
    """

    key = models.UUIDField(primary_key=True)
    name = models.CharField(max_length=191)
    # Nanoseconds since the epoch; start 0 when the sender does not say when its run began.
    start_ns = models.BigIntegerField(default=0)
    last_ns = models.BigIntegerField(null=True)
    last_value = models.FloatField(null=True)
    # Deliberately not indexed: every export updates the row, and with no index on a changed
    # column PostgreSQL updates it in place (HOT); the daily retention scan can afford a seq scan.
    updated_at = models.DateTimeField()

    class Meta:
        db_table = "cumulative_streams"

    def __str__(self) -> str:
        return f"{self.name} @ {self.last_ns}: {self.last_value}"
