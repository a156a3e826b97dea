"""Gauges read when /metrics is scraped, from PostgreSQL and the broker, by whoever serves it.

Being read at scrape time, these are never in the multiprocess files, so no process's copy can
go stale or be counted twice. Each source costs one short query: the outbox backlog and the
purges of deleted metrics are read through metrics' selectors (`outbox_backlog` uses the partial
index on unfinished batches, `purges_pending` counts a table of a few rows at most), the
connection count reads pg_stat_activity (storage.py, one row per backend), the broker one LLEN
(Redis) or one passive queue.declare on a short-lived connection (RabbitMQ).
A source that fails is left out of that scrape and logged; the rest of the scrape answers.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import amqp
import redis
from django.conf import settings
from django.db import DatabaseError
from django.utils import timezone
from kombu import Connection
from kombu.exceptions import OperationalError
from prometheus_client.core import GaugeMetricFamily, Metric

from metrics import selectors

from . import storage

logger = logging.getLogger(__name__)

QUEUE_STATES = ("pending", "running", "failed")
_broker_clients: dict[str, redis.Redis] = {}


def queue_depth() -> Iterator[Metric]:
    counts = selectors.outbox_backlog()
    family = GaugeMetricFamily(
        "glowing_fiesta_queue_depth",
        "Queued batches (the ingest_batches outbox) by state: pending, running, failed.",
        labels=["state"],
    )
    for state in QUEUE_STATES:
        family.add_metric([state], counts.get(state, 0))
    yield family


def purges_pending() -> Iterator[Metric]:
    count, oldest_at = selectors.purges_pending()
    oldest = max((timezone.now() - oldest_at).total_seconds(), 0.0) if oldest_at else 0.0
    yield GaugeMetricFamily(
        "glowing_fiesta_metric_purges_pending",
        "Deleted metrics whose points and rollups a worker has still to remove.",
        value=count,
    )
    yield GaugeMetricFamily(
        "glowing_fiesta_metric_purge_oldest_seconds",
        "Age of the oldest purge not yet done (0 when none): over a minute, it waits for the "
        "sweeper or for a worker.",
        value=float(oldest),
    )


def storage_size() -> Iterator[Metric]:
    by_kind, days, points = selectors.storage_figures()
    family = GaugeMetricFamily(
        "glowing_fiesta_storage_bytes",
        "Bytes on disk of the point and rollup tables by kind: raw, minute, compact, rollups.",
        labels=["kind"],
    )
    for kind, size in by_kind.items():
        family.add_metric([kind], size)
    yield family
    yield GaugeMetricFamily(
        "glowing_fiesta_compacted_partitions",
        "Day partitions held in the compacted form.",
        value=days,
    )
    yield GaugeMetricFamily(
        "glowing_fiesta_compacted_points", "Points held in the compacted form.", value=points
    )


def _broker() -> redis.Redis:
    url = settings.CELERY_BROKER_URL
    client = _broker_clients.get(url)
    if client is None:
        client = _broker_clients[url] = redis.Redis.from_url(
            url, socket_timeout=0.25, socket_connect_timeout=0.25
        )
    return client


# A scrape waits at most this long on a broker that does not answer.
BROKER_TIMEOUT_SECONDS = 0.25


def _amqp_queue_messages(queue: str) -> int:
    """Messages ready in `queue` on RabbitMQ: a passive declare creates nothing (0 while no worker
    or publish has declared the queue yet)."""
    with Connection(
        settings.CELERY_BROKER_URL,
        connect_timeout=BROKER_TIMEOUT_SECONDS,
        transport_options={
            "read_timeout": BROKER_TIMEOUT_SECONDS,
            "write_timeout": BROKER_TIMEOUT_SECONDS,
        },
    ) as connection:
        try:
            return connection.default_channel.queue_declare(queue=queue, passive=True).message_count
        except amqp.exceptions.NotFound:
            return 0


def broker_queue() -> Iterator[Metric]:
    queue = settings.CELERY_TASK_DEFAULT_QUEUE
    url = settings.CELERY_BROKER_URL
    if url.startswith(("amqp://", "amqps://", "pyamqp://")):
        length = _amqp_queue_messages(queue)
    elif url.startswith(("redis://", "rediss://", "unix://")):
        length = _broker().llen(queue)
    else:
        return
    family = GaugeMetricFamily(
        "glowing_fiesta_queue_broker_messages",
        "Messages waiting in the Celery queue on the broker (Redis LLEN, RabbitMQ messages "
        "ready), not yet taken.",
        labels=["queue"],
    )
    family.add_metric([queue], length)
    yield family


def database_connections() -> Iterator[Metric]:
    ours = storage.connections_ours(prefix=settings.DB_APPLICATION_PREFIX)
    server_total, max_connections = storage.connections_server()
    family = GaugeMetricFamily(
        "glowing_fiesta_db_connections",
        "PostgreSQL connections of this service (by application_name), by role and state.",
        labels=["role", "state"],
    )
    for role, state, count in sorted(ours):
        family.add_metric([role, state.replace(" ", "_")], count)
    yield family
    yield GaugeMetricFamily(
        "glowing_fiesta_db_server_connections",
        "Client connections to the PostgreSQL server, of every application.",
        value=server_total,
    )
    yield GaugeMetricFamily(
        "glowing_fiesta_db_max_connections",
        "The PostgreSQL server's max_connections.",
        value=max_connections,
    )


SOURCES = (
    ("queue_depth", queue_depth, DatabaseError),
    ("purges_pending", purges_pending, DatabaseError),
    ("storage_size", storage_size, DatabaseError),
    ("broker_queue", broker_queue, (redis.RedisError, OSError, amqp.AMQPError, OperationalError)),
    ("database_connections", database_connections, DatabaseError),
)


class ScrapeTimeCollector:
    """The gauges above, for a prometheus_client registry."""

    def collect(self) -> Iterator[Metric]:
        for name, source, errors in SOURCES:
            try:
                families = list(source())
            except errors:
                logger.warning("scrape source failed", extra={"source": name}, exc_info=True)
                continue
            yield from families
