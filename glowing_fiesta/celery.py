"""The Celery app and the one beat schedule."""

import os

from celery import Celery
from celery.schedules import crontab

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "glowing_fiesta.settings")

app = Celery("glowing_fiesta")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# Celery tasks by outcome (glowing_fiesta/monitoring/).
from .monitoring import celery_signals  # noqa: E402, F401


def beat_schedule(settings) -> dict:
    """The periodic work, read from settings so tests can check it."""
    return {
        # Hourly and idempotent: partitions for the days ahead always exist, even if a daily
        # run was missed.
        "metrics-partitions-ensure": {
            "task": "metrics.partitions_ensure",
            "schedule": crontab(minute=7),
        },
        # Closed days into their compacted form; a day missed is taken by the next run.
        "metrics-points-compact": {
            "task": "metrics.points_compact",
            "schedule": crontab(hour=2, minute=37),
        },
        # Sends again the queued batches whose message was lost (Redis restarted or flushed, a
        # worker killed). A sweep not started within its interval is dropped, so workers that
        # were down do not come back to a pile of identical sweeps.
        "metrics-batches-sweep": {
            "task": "metrics.batches_sweep",
            "schedule": 30.0,
            "options": {"expires": 30},
        },
        # Runs the purges of deleted metrics whose message was lost.
        "metrics-purges-sweep": {
            "task": "metrics.purges_sweep",
            "schedule": 60.0,
            "options": {"expires": 60},
        },
        # The gauges of the own figures (queue depth, connections), once per interval.
        **(
            {
                "selfmetrics-gauges-store": {
                    "task": "selfmetrics.gauges_store",
                    "schedule": float(settings.SELF_METRICS_INTERVAL),
                    "options": {"expires": settings.SELF_METRICS_INTERVAL},
                }
            }
            if settings.SELF_METRICS
            else {}
        ),
        # Daily at RETENTION_RUN_AT; the app's time zone is UTC (Celery's default, kept unset).
        "retention-apply": {
            "task": "retention.apply",
            "schedule": crontab(
                hour=settings.RETENTION_RUN_AT.hour, minute=settings.RETENTION_RUN_AT.minute
            ),
        },
        # Rule groups (alerting/): each runs at its own interval's ticks, so this runs often;
        # the queued alerts are sent after each evaluation and again here, to retry.
        **(
            {
                "alerting-rules-evaluate": {
                    "task": "alerting.rules_evaluate",
                    "schedule": float(settings.ALERTING_TICK_SECONDS),
                    "options": {"expires": settings.ALERTING_TICK_SECONDS},
                },
                "alerting-notifications-send": {
                    "task": "alerting.notifications_send",
                    "schedule": 10.0,
                    "options": {"expires": 10},
                },
            }
            if settings.RULE_FILES
            else {}
        ),
    }


@app.on_after_finalize.connect
def _setup_periodic_tasks(sender: Celery, **_: object) -> None:
    from django.conf import settings

    sender.conf.beat_schedule = beat_schedule(settings)
