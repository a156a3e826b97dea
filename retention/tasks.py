"""Celery entry point for retention; beat runs it daily at RETENTION_RUN_AT (glowing_fiesta/celery.py)."""

from __future__ import annotations

from celery import shared_task
from django.db import OperationalError
from django.utils import timezone

from .services import retention_apply


# A lost connection or a lock wait past its timeout is worth another try a little later; the
# run is safe to repeat, since whatever it already removed is gone and stays gone.
@shared_task(
    name="retention.apply",
    autoretry_for=(OperationalError,),
    retry_backoff=60,
    max_retries=3,
)
def retention_apply_task() -> dict[str, int]:
    """Remove what has expired now; returns the rows removed per table ({} if skipped)."""
    return retention_apply(now=timezone.now())
