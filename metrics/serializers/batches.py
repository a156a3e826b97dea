"""Response shapes of a queued batch (the outbox): the 202 that accepts it and
GET /api/batches/{id}, its status."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from ..models import IngestBatch


class BatchAcceptedOutput(serializers.Serializer):
    batch_id = serializers.IntegerField()
    status_url = serializers.CharField(help_text="GET it for the batch's state.")


class BatchStatusOutput(serializers.Serializer):
    id = serializers.IntegerField()
    state = serializers.ChoiceField(
        choices=IngestBatch.State.choices,
        help_text="pending → running → done; failed after QUEUE_MAX_ATTEMPTS or a permanent error.",
    )
    points = serializers.IntegerField()
    attempts = serializers.IntegerField()
    error = serializers.CharField(
        allow_null=True, help_text="The last error, if any; null once done."
    )
    created_at = serializers.DateTimeField()
    processed_at = serializers.DateTimeField(allow_null=True)

    def to_representation(self, instance: IngestBatch) -> dict[str, Any]:
        data = super().to_representation(instance)
        data["error"] = instance.error or None
        return data
