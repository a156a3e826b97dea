"""Asynchronous ingestion over HTTP: `Prefer: respond-async` (RFC 7240) and the batch status.

Any ingestion endpoint answers 202 with a status URL instead of 201 when the client prefers it;
the points are validated first, exactly as in the synchronous path, and stored by a worker.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from django.urls import reverse
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.response import Response

from apikeys.api import ApiKeyView

from . import queue
from .idempotency import Outcome
from .models import IngestBatch
from .services import PointInput


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


PREFER_PARAMETER = OpenApiParameter(
    "Prefer",
    str,
    OpenApiParameter.HEADER,
    description=(
        "`respond-async`: validate now, answer 202 with a status URL, and store the points "
        "in the background (Preference-Applied: respond-async)."
    ),
)
ACCEPTED = {
    202: OpenApiResponse(
        BatchAcceptedOutput, description="Accepted with Prefer: respond-async; stored soon"
    )
}


def prefers_async(request: Request) -> bool:
    """True when a Prefer header (RFC 7240) holds the respond-async preference."""
    for preference in request.headers.get("Prefer", "").split(","):
        name = preference.split(";", 1)[0].split("=", 1)[0].strip().lower()
        if name == "respond-async":
            return True
    return False


def batch_accept(*, api_key_id: int, points: Sequence[PointInput], now: datetime) -> Outcome:
    """Queue the validated points as one batch; the 202 outcome (replayed on a retry)."""
    batch = queue.batch_create(api_key_id=api_key_id, points=points, now=now)
    return Outcome(
        202,
        {
            "batch_id": batch.pk,
            "status_url": reverse("ingest-batch", kwargs={"batch_id": batch.pk}),
        },
    )


def accepted_headers(outcome: Outcome) -> dict[str, str]:
    if outcome.status != 202:
        return {}
    return {"Preference-Applied": "respond-async", "Location": outcome.body["status_url"]}


class BatchStatusView(ApiKeyView):
    """A queued batch's progress. Scope write: a batch belongs to the key that sent it, and
    only write keys send points; any other key gets 404, as if the batch did not exist."""

    required_scope = "write"

    @extend_schema(
        summary="State of a batch sent with Prefer: respond-async",
        responses={
            200: BatchStatusOutput,
            404: OpenApiResponse(description="No such batch for this API key"),
        },
    )
    def get(self, request: Request, batch_id: int) -> Response:
        batch = queue.batch_get_for_key(api_key_id=request.auth.pk, batch_id=batch_id)
        if batch is None:
            raise NotFound(f"No batch {batch_id} for this API key.")
        return Response(BatchStatusOutput(batch).data)
