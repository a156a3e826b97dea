"""Self-monitoring, the recording side: the service's own figures for GET /metrics (Prometheus)
and for its own store. Imports no app.

The working code calls one function here at the spot it measures, and never prometheus_client:

    figures.py      every metric, label, bucket and known label value
    record.py       the recording calls (re-exported below)
    sink.py         the one interface to the own store, registered by the selfmetrics app
    middleware.py   request duration by method, URL pattern name and status
    multiproc.py    the PROMETHEUS_MULTIPROC_DIR files that let every process be summed
    celery_signals.py  Celery tasks by outcome

The selfmetrics app serves GET /metrics, reads the scrape-time gauges and stores the figures.
"""

from typing import Any

__all__ = [
    "aggregation_observe",
    "auth_failure",
    "celery_task",
    "compaction_observe",
    "db_write_timed",
    "ingest_counted",
    "ingest_path",
    "ingestion_failure",
    "notifications_observe",
    "points_ingested",
    "problem_observed",
    "rate_limited",
    "request_observe",
    "retention_observe",
    "rule_group_evaluated",
]


def __getattr__(name: str) -> Any:
    # Loaded on first use rather than with the package: glowing_fiesta/celery.py imports this
    # package before the settings are checked, and defining the figures creates their files
    # in PROMETHEUS_MULTIPROC_DIR, which must be known to be valid first.
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from . import record

    value = getattr(record, name)
    globals()[name] = value
    return value
