"""API keys: who may call the API, with which scopes, at what rate.

A row holds the key's public prefix and an HMAC of the whole key, never the key itself.
"""

from __future__ import annotations

from datetime import datetime

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.core.validators import MinValueValidator
from django.db import models
from django.utils import timezone


class Scope(models.TextChoices):
    WRITE = "write", "write"
    READ = "read", "read"
    # Destructive operations (deleting a metric with its data); never granted by default.
    ADMIN = "admin", "admin"


class KeyStatus(models.TextChoices):
    ACTIVE = "active", "active"
    REVOKED = "revoked", "revoked"
    EXPIRED = "expired", "expired"


def default_scopes() -> list[str]:
    return [Scope.WRITE.value, Scope.READ.value]


def default_rate_limit() -> int:
    return settings.API_KEY_DEFAULT_RATE_LIMIT


class ApiKey(models.Model):
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=8, unique=True, editable=False)
    key_hash = models.CharField(max_length=64, editable=False)
    scopes = ArrayField(
        models.CharField(max_length=8, choices=Scope.choices), default=default_scopes
    )
    rate_limit = models.PositiveIntegerField(
        default=default_rate_limit,
        validators=[MinValueValidator(1)],
        help_text="Requests per minute.",
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)
    # Metric-name prefixes the key may read and write (apikeys/namespaces.py); none: every
    # metric. Checked by apikeys.namespaces.namespaces_check wherever they are set.
    namespaces = ArrayField(
        models.CharField(max_length=191),
        default=list,
        blank=True,
        size=20,
        help_text="Metric-name prefixes this key may read and write, e.g. checkout. "
        "(empty: every metric).",
    )

    # DRF's IsAuthenticated and Django's templates ask the authenticated "user" this.
    is_authenticated = True
    is_anonymous = False

    class Meta:
        db_table = "api_keys"
        verbose_name = "API key"
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(scopes__contained_by=Scope.values),
                name="api_keys_scopes_valid",
            ),
            models.CheckConstraint(
                condition=models.Q(rate_limit__gte=1), name="api_keys_rate_limit_positive"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix})"

    def status(self, *, now: datetime | None = None) -> KeyStatus:
        now = now or timezone.now()
        if self.revoked_at is not None:
            return KeyStatus.REVOKED
        if self.expires_at is not None and self.expires_at <= now:
            return KeyStatus.EXPIRED
        return KeyStatus.ACTIVE

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes

    @property
    def namespace_prefixes(self) -> tuple[str, ...]:
        """The namespaces as the tuple str.startswith takes (apikeys.namespaces)."""
        return tuple(self.namespaces)
