"""Self-monitoring: the service's own figures on GET /metrics (Prometheus) and in its own store.

The working code calls one function here at the spot it measures, and never prometheus_client:

    figures.py      every metric, label and bucket
    record.py       the recording calls (re-exported below)
    middleware.py   request duration by method, URL pattern name and status
    collectors.py   gauges read when /metrics is scraped: queue depth, PostgreSQL connections
    views.py        GET /metrics
    multiproc.py    the PROMETHEUS_MULTIPROC_DIR files that let every process be summed
    selfstore.py    the background flush of the same figures as glowing_fiesta.* metrics
    celery_signals.py  Celery tasks by outcome
"""

from typing import Any

__all__ = [
    "aggregation_observe",
    "auth_failure",
    "celery_task",
    "db_write_timed",
    "ingest_counted",
    "ingest_path",
    "ingestion_failure",
    "points_ingested",
    "problem_observed",
    "rate_limited",
    "request_observe",
    "retention_observe",
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
