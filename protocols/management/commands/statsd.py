"""`manage.py statsd`: the StatsD/DogStatsD UDP server, one asyncio process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import signal
import socket
import time
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import close_old_connections, connections
from django.utils import timezone

from glowing_fiesta import monitoring
from glowing_fiesta.gc_tuning import gc_settle
from protocols.statsd import Aggregator, Flush
from protocols.statsd_flush import FlushWriter, WriteOutcome

logger = logging.getLogger("metrics.statsd")

# Asked of the kernel for the socket's receive buffer (it caps the figure at net.core.rmem_max):
# datagrams that arrive while the loop is busy wait there instead of being dropped.
RECEIVE_BUFFER = 8 * 1024 * 1024
# Datagrams read from the socket's buffer at shutdown, after the signal, at most.
DRAIN_MAX = 100_000


class StatsdProtocol(asyncio.DatagramProtocol):
    """Hands every datagram to the aggregator; an unexpected error is logged, never raised."""

    def __init__(self, aggregator: Aggregator) -> None:
        self.aggregator = aggregator
        self.datagrams = 0

    def datagram_received(self, data: bytes, addr: object) -> None:
        self.datagrams += 1
        try:
            self.aggregator.add_packet(data)
        except Exception:
            logger.exception("statsd datagram could not be handled")

    def error_received(self, exc: Exception) -> None:
        logger.warning("statsd socket error: %s", exc)


class BindError(Exception):
    """The UDP socket could not be bound (the cause is the OSError)."""


def bind_socket(host: str, port: int) -> socket.socket:
    """A non-blocking UDP socket bound to host:port, with a large receive buffer."""
    try:
        family, _, _, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_DGRAM, proto=socket.IPPROTO_UDP
        )[0]
    except OSError as exc:
        raise BindError from exc
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise BindError from exc
    sock.setblocking(False)
    return sock


def drain(sock: socket.socket, protocol: StatsdProtocol) -> int:
    """Read what already waits in the socket's buffer, without waiting for more."""
    count = 0
    while count < DRAIN_MAX:
        try:
            data = sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            break
        except OSError:
            break
        protocol.datagram_received(data, None)
        count += 1
    return count


def next_boundary(now: float, interval: int) -> float:
    """The next multiple of `interval` seconds in Unix time: flushes fall on whole intervals."""
    return (math.floor(now / interval) + 1) * interval


def count_failures(flush: Flush, outcome: WriteOutcome) -> None:
    """What a flush could not store, in the service's own ingestion_failures by reason."""
    stats = flush.stats
    monitoring.ingestion_failure("invalid", stats.invalid + stats.out_of_range)
    monitoring.ingestion_failure("too_large", stats.series_dropped_lines + stats.samples_dropped)
    monitoring.ingestion_failure("type_conflict", sum(outcome.conflicts.values()))
    monitoring.ingestion_failure("series_limit", sum(outcome.series_limited.values()))
    monitoring.ingestion_failure("database", outcome.lost)


def log_flush(flush: Flush, outcome: WriteOutcome, seconds: float, *, final: bool) -> None:
    stats = flush.stats
    fields = {
        "final": final,
        "lines": stats.lines,
        "invalid_lines": stats.invalid,
        "points": len(flush.points),
        "stored": outcome.stored,
        "series_dropped": stats.series_dropped,
        "series_dropped_lines": stats.series_dropped_lines,
        "samples_dropped": stats.samples_dropped,
        "out_of_range": stats.out_of_range,
        "type_conflict_names": len(outcome.conflicts),
        "type_conflict_points": sum(outcome.conflicts.values()),
        "series_limit_points": sum(outcome.series_limited.values()),
        "kept_for_next_flush": outcome.kept,
        "lost": outcome.lost,
        "duration_ms": round(seconds * 1000, 1),
    }
    if stats.series_dropped_lines:
        logger.warning(
            "statsd flush dropped %d lines of %d new series past STATSD_MAX_SERIES_PER_FLUSH=%d",
            stats.series_dropped_lines,
            stats.series_dropped,
            settings.STATSD_MAX_SERIES_PER_FLUSH,
            extra=fields,
        )
    if stats.samples_dropped:
        logger.warning(
            "statsd flush dropped %d samples past STATSD_MAX_SAMPLES_PER_FLUSH=%d",
            stats.samples_dropped,
            settings.STATSD_MAX_SAMPLES_PER_FLUSH,
            extra=fields,
        )
    if outcome.conflicts:
        names = sorted(outcome.conflicts)
        logger.warning(
            "statsd flush dropped %d names whose type conflicts with the stored metric: %s",
            len(names),
            ", ".join(names[:10]) + (" …" if len(names) > 10 else ""),
            extra=fields,
        )
    if outcome.error and final:
        logger.error(
            "statsd final flush not stored (%s): %d points lost at exit",
            outcome.error.splitlines()[0],
            outcome.kept + outcome.lost,
            extra=fields,
        )
    elif outcome.error:
        level = logging.WARNING if outcome.kept else logging.ERROR
        logger.log(
            level,
            "statsd flush not stored (%s): %d points kept for the next flush, %d lost",
            outcome.error.splitlines()[0],
            outcome.kept,
            outcome.lost,
            extra=fields,
        )
    level = logging.INFO if stats.lines or outcome.stored or final else logging.DEBUG
    logger.log(level, "statsd flush", extra=fields)


async def serve(*, host: str, port: int, interval: int) -> None:
    """Receive until SIGTERM or SIGINT, storing a flush every `interval` seconds, then the last."""
    sock = bind_socket(host, port)
    loop = asyncio.get_running_loop()
    # One thread for every database write: flushes never overlap, and the thread's Django
    # connection is reused from flush to flush (and closed at the end).
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="statsd-flush")
    loop.set_default_executor(executor)
    aggregator = Aggregator(
        max_series=settings.STATSD_MAX_SERIES_PER_FLUSH,
        max_samples=settings.STATSD_MAX_SAMPLES_PER_FLUSH,
    )
    writer = FlushWriter(max_kept=settings.STATSD_MAX_SAMPLES_PER_FLUSH)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    protocol = StatsdProtocol(aggregator)
    transport, _ = await loop.create_datagram_endpoint(lambda: protocol, sock=sock)
    logger.info(
        "statsd listening on %s:%d, flushing every %d s",
        host,
        port,
        interval,
        extra={
            "bind": f"{host}:{port}",
            "flush_seconds": interval,
            "receive_buffer": sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF),
        },
    )

    def store(points: list) -> WriteOutcome:
        # In the flush thread: a connection broken by an earlier error, or older than
        # CONN_MAX_AGE, is replaced before the write and let go after it when due.
        close_old_connections()
        try:
            return writer.write(points)
        finally:
            close_old_connections()

    async def write(final: bool) -> None:
        flush = aggregator.flush(now=timezone.now())
        started = time.perf_counter()
        outcome = await asyncio.to_thread(store, flush.points)
        count_failures(flush, outcome)
        log_flush(flush, outcome, time.perf_counter() - started, final=final)

    try:
        while not stop.is_set():
            delay = next_boundary(time.time(), interval) - time.time()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=max(delay, 0))
            if stop.is_set():
                break
            await write(final=False)
        # Stop receiving, but keep what had already arrived: read the socket's buffer out.
        drained = drain(sock, protocol)
        transport.close()
        logger.info("statsd stopping: writing the pending flush", extra={"drained": drained})
        await write(final=True)
    finally:
        transport.close()
        await asyncio.to_thread(connections.close_all)
        executor.shutdown(wait=True)


class Command(BaseCommand):
    help = (
        "Receive StatsD/DogStatsD lines over UDP on STATSD_BIND and store them every "
        "STATSD_FLUSH_SECONDS. SIGTERM or SIGINT writes the pending flush, then exits."
    )

    def handle(self, *args, **options) -> None:
        host, port = settings.STATSD_BIND
        gc_settle(load_urls=False)
        try:
            asyncio.run(serve(host=host, port=port, interval=settings.STATSD_FLUSH_SECONDS))
        except BindError as exc:
            raise CommandError(
                f"cannot listen on STATSD_BIND={host}:{port}: {exc.__cause__}; "
                "another StatsD server (a Datadog agent?) may hold the port: set STATSD_BIND"
            ) from None
