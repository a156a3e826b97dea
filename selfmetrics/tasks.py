"""Celery entry point for the own figures that are not per process: the gauges."""

from __future__ import annotations

from celery import shared_task
from django.utils import timezone

from .selfstore import gauges_store


# Sent by beat every SELF_METRICS_INTERVAL seconds with that expiry: a tick that no worker
# took in time is dropped rather than written late.
@shared_task(name="selfmetrics.gauges_store")
def gauges_store_task() -> int:
    """Write queue depth, broker queue and connection gauges as glowing_fiesta.* metrics."""
    return gauges_store(now=timezone.now())
