"""Asynchronous ingestion over HTTP: `Prefer: respond-async` (RFC 7240) and the batch status.

Any ingestion endpoint answers 202 with a status URL instead of 201 when the client prefers it;
the points are validated first, exactly as in the synchronous path, and stored by a worker
(`metrics.batches`).
"""

from __future__ import annotations

from typing import Any

from django.urls import reverse
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.response import Response

from apikeys.base import ApiKeyView
from glowing_fiesta.openapi import KEYED_ERRORS, problem_responses

from .. import selectors
from ..models import IngestBatch
from ..serializers.batches import BatchAcceptedOutput, BatchStatusOutput

BIGINT_MAX = 2**63 - 1

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


def accepted_body(batch: IngestBatch) -> dict[str, Any]:
    """The 202 body of a queued batch (saved with the Idempotency-Key, replayed on a retry)."""
    return {
        "batch_id": batch.pk,
        "status_url": reverse("ingest-batch", kwargs={"batch_id": batch.pk}),
    }


def accepted_headers(body: dict[str, Any]) -> dict[str, str]:
    return {"Preference-Applied": "respond-async", "Location": body["status_url"]}


class BatchStatusView(ApiKeyView):
    """A queued batch's progress. Scope write: a batch belongs to the key that sent it, and
    only write keys send points; any other key gets 404, as if the batch did not exist."""

    required_scope = "write"

    @extend_schema(
        summary="State of a batch sent with Prefer: respond-async",
        parameters=[
            OpenApiParameter(
                "batch_id",
                {"type": "integer", "minimum": 0, "maximum": BIGINT_MAX},
                OpenApiParameter.PATH,
            )
        ],
        responses={
            200: BatchStatusOutput,
            **problem_responses({404: "No such batch for this API key"}),
            **KEYED_ERRORS,
        },
    )
    def get(self, request: Request, batch_id: int) -> Response:
        # An id past PostgreSQL's bigint names no batch (and would not fit the query).
        batch = None
        if batch_id <= BIGINT_MAX:
            batch = selectors.outbox_get_for_key(api_key_id=request.auth.pk, batch_id=batch_id)
        if batch is None:
            raise NotFound(f"No batch {batch_id} for this API key.")
        return Response(BatchStatusOutput(batch).data)
