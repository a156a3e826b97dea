"""The service's own figures, as Prometheus metrics: every name, label and bucket in one place.

Nothing outside this package touches these objects; the code doing the work calls the small
functions of `glowing_fiesta.monitoring` (record.py). Under PROMETHEUS_MULTIPROC_DIR each process
keeps its values in a memory-mapped file of that directory, and GET /metrics sums the files of
every process (multiproc.py).

Labels hold bounded values only: URL pattern names (never a path), fixed reasons and outcomes,
task and table names. Nothing a client sends, an API key above all, ever becomes a label.

Every labelled counter has the list of its known label values next to it, and `counters_zero`
exports each of them at 0 from the moment the figures are defined: `rate()` and `increase()`
over a series that appears only with its first event miss that event, and an alert on them
sees nothing until the second (Prometheus's advice on missing series: initialise them).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from prometheus_client import Counter, Gauge, Histogram

# Seconds: a single point is written in about a millisecond, a 1000-point batch in tens of
# milliseconds, a percentile query may take seconds.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Points per write: 1 (a single point) to a few thousand (one batch of every process's figures).
POINTS_BUCKETS = (1, 2, 5, 10, 25, 64, 100, 250, 500, 1000, 2500, 5000)

REQUEST_DURATION = Histogram(
    "glowing_fiesta_request_duration_seconds",
    "Time from the request reaching Django to its response, by method, URL pattern and status.",
    ["method", "route", "status"],
    buckets=LATENCY_BUCKETS,
)
INGESTION_FAILURE_REASONS = (
    "invalid",
    "type_conflict",
    "series_limit",
    "namespace",
    "too_large",
    "unsupported_media",
    "rate_limited",
    "unauthenticated",
    "database",
    "batch_failed",
    "other",
)
INGESTION_FAILURES = Counter(
    "glowing_fiesta_ingestion_failures",
    f"Writes refused or lost, by reason ({', '.join(INGESTION_FAILURE_REASONS)}).",
    ["reason"],
)
INGEST_PATHS = ("sync", "async", "statsd", "self")
POINTS_INGESTED = Counter(
    "glowing_fiesta_points_ingested",
    "Points stored, by path: sync (in the request), async (a queued batch), statsd (the StatsD "
    "listener), self (the own figures).",
    ["path"],
)
DB_WRITE_LATENCY = Histogram(
    "glowing_fiesta_db_write_latency_seconds",
    "Time of one write of points and their rollups to PostgreSQL (storage.points_write).",
    buckets=LATENCY_BUCKETS,
)
DB_WRITE_POINTS = Histogram(
    "glowing_fiesta_db_write_points",
    "Points in one write to PostgreSQL.",
    buckets=POINTS_BUCKETS,
)
AGGREGATION_LATENCY = Histogram(
    "glowing_fiesta_aggregation_latency_seconds",
    "Time of one aggregation query, by interval and source (the rollup table read, or raw).",
    ["interval", "source"],
    buckets=LATENCY_BUCKETS,
)
# The tables of retention/services.py's PRUNE_RULES, in their order (tests hold them equal).
RETENTION_TABLES = (
    "metric_points",
    "metric_rollup_minute",
    "metric_points_compact",
    "metric_rollup_15m",
    "metric_rollup_hour",
    "metric_rollup_day",
    "idempotency_keys",
    "ingest_batches",
    "cumulative_streams",
)
RETENTION_DELETED = Counter(
    "glowing_fiesta_retention_deleted",
    "Rows removed by retention runs, by table.",
    ["table"],
)
# The largest value over every process that ever set it: a run's time only grows.
RETENTION_LAST_SUCCESS = Gauge(
    "glowing_fiesta_retention_last_success_timestamp_seconds",
    "Unix time at which the last successful retention run finished (0: none since start).",
    multiprocess_mode="max",
)
COMPACTION_POINTS = Counter(
    "glowing_fiesta_compaction_points",
    "Raw points rewritten into the compacted form of their closed day.",
)
COMPACTION_LAST_SECONDS = Gauge(
    "glowing_fiesta_compaction_last_duration_seconds",
    "Duration of the last compaction run that compacted a day.",
    multiprocess_mode="mostrecent",
)
COMPACTION_LAST_RATE = Gauge(
    "glowing_fiesta_compaction_last_points_per_second",
    "Points per second of the last compaction run that compacted a day.",
    multiprocess_mode="mostrecent",
)
AUTH_FAILURE_REASONS = ("missing", "invalid", "revoked", "expired", "in_url", "insufficient_scope")
AUTH_FAILURES = Counter(
    "glowing_fiesta_auth_failures",
    f"Requests refused by API-key authentication, by reason ({', '.join(AUTH_FAILURE_REASONS)}).",
    ["reason"],
)
RATE_LIMITED = Counter(
    "glowing_fiesta_rate_limited_requests",
    "Requests refused with 429 because their API key was over its rate limit.",
)
# The project's Celery tasks by registered name (tests hold the list equal to the tasks the
# Celery app registers), and every outcome a task signal reports.
CELERY_TASK_NAMES = (
    "alerting.notifications_send",
    "alerting.rules_evaluate",
    "metrics.ProcessMetricBatch",
    "metrics.batches_sweep",
    "metrics.partitions_ensure",
    "metrics.points_compact",
    "metrics.purge",
    "metrics.purges_sweep",
    "retention.apply",
    "selfmetrics.gauges_store",
)
CELERY_TASK_OUTCOMES = ("success", "failure", "retry", "revoked")
CELERY_TASKS = Counter(
    "glowing_fiesta_celery_tasks",
    f"Celery task runs by task name and outcome ({', '.join(CELERY_TASK_OUTCOMES)}).",
    ["task", "outcome"],
)

# Rule evaluation and notifications (alerting/), in Prometheus's own names after the prefix.
# Their label values (rule groups, Alertmanager URLs) come from the configuration, so they are
# created at 0 when a group is first evaluated or a URL first used, not here.
RULE_GROUP_DURATION = Histogram(
    "glowing_fiesta_rule_group_duration_seconds",
    "Time one evaluation of a rule group took, by rule group.",
    ["rule_group"],
    buckets=LATENCY_BUCKETS,
)
RULE_GROUP_ITERATIONS = Counter(
    "glowing_fiesta_rule_group_iterations",
    "Evaluations of a rule group, by rule group.",
    ["rule_group"],
)
RULE_EVALUATION_FAILURES = Counter(
    "glowing_fiesta_rule_evaluation_failures",
    "Rule evaluations that failed (bad query, duplicate label sets, over the limit), by group.",
    ["rule_group"],
)
RULE_GROUP_ITERATIONS_MISSED = Counter(
    "glowing_fiesta_rule_group_iterations_missed",
    "Ticks of a rule group that were never evaluated (no evaluator ran in time), by group.",
    ["rule_group"],
)
NOTIFICATIONS_SENT = Counter(
    "glowing_fiesta_notifications_sent",
    "Alerts delivered to an Alertmanager, by Alertmanager URL.",
    ["alertmanager"],
)
NOTIFICATIONS_ERRORS = Counter(
    "glowing_fiesta_notifications_errors",
    "Alerts whose delivery to an Alertmanager failed (kept queued to retry), by Alertmanager.",
    ["alertmanager"],
)
NOTIFICATIONS_DROPPED = Counter(
    "glowing_fiesta_notifications_dropped",
    "Alerts dropped from a full queue (ALERTING_QUEUE_CAPACITY), by Alertmanager URL.",
    ["alertmanager"],
)

# Labelled counters whose values come from the configuration (rule groups, Alertmanager URLs):
# created at 0 by the code that first knows a value, not by counters_zero().
CONFIGURED_LABEL_COUNTERS = (
    RULE_GROUP_ITERATIONS,
    RULE_EVALUATION_FAILURES,
    RULE_GROUP_ITERATIONS_MISSED,
    NOTIFICATIONS_SENT,
    NOTIFICATIONS_ERRORS,
    NOTIFICATIONS_DROPPED,
)

# Every labelled counter with the known values of each of its labels, in label order.
COUNTER_LABEL_VALUES: tuple[tuple[Counter, tuple[Sequence[str], ...]], ...] = (
    (INGESTION_FAILURES, (INGESTION_FAILURE_REASONS,)),
    (POINTS_INGESTED, (INGEST_PATHS,)),
    (RETENTION_DELETED, (RETENTION_TABLES,)),
    (AUTH_FAILURES, (AUTH_FAILURE_REASONS,)),
    (CELERY_TASKS, (CELERY_TASK_NAMES, CELERY_TASK_OUTCOMES)),
)


def counters_zero() -> None:
    """Create every known series of the labelled counters at 0 (in this process's file under
    PROMETHEUS_MULTIPROC_DIR), so that a scrape shows them before their first event. Creating
    a series that exists already leaves its value as it is."""
    for counter, label_values in COUNTER_LABEL_VALUES:
        for values in itertools.product(*label_values):
            counter.labels(*values)


counters_zero()
