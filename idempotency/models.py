from __future__ import annotations

from django.db import models


class IdempotencyRecord(models.Model):
    """The remembered outcome of a request sent with an Idempotency-Key, for 24 hours.

    Scoped to the API key: two clients may use the same Idempotency-Key value independently.
    A row is claimed and completed in the transaction of the request's own writes, so a row
    other requests can see is always `done`; `in_flight` exists only inside that transaction.
    """

    class State(models.TextChoices):
        IN_FLIGHT = "in_flight", "in flight"
        DONE = "done", "done"

    api_key = models.ForeignKey("apikeys.ApiKey", on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=255)
    # sha256 of the method, path and canonical JSON body: a retry must send the same request.
    fingerprint = models.CharField(max_length=64)
    state = models.CharField(max_length=16, choices=State.choices, default=State.IN_FLIGHT)
    status_code = models.PositiveSmallIntegerField(null=True)
    response = models.JSONField(null=True)
    # Headers of the first response that a replay repeats (Location, Preference-Applied).
    headers = models.JSONField(default=dict)
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()

    class Meta:
        # The table predates this app (it was created by metrics 0002); its name is pinned.
        db_table = "idempotency_keys"
        constraints = [
            models.UniqueConstraint(fields=["api_key", "key"], name="idempotency_key_uniq")
        ]
        indexes = [models.Index(fields=["created_at"], name="idempotency_created_idx")]
