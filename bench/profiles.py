"""Where a request's time goes: cProfile over one ingestion path, in one process, end to end.

    make bench-profile ARGS="single"           # or, with DATABASE_URL and REDIS_URL set:
    python -m bench.profiles single|bare|batch|ack|drain [--count N] [--top K]

  single  POST /api/metrics/counter, one counter with one tag;
  bare    the same bodies to the bare ceiling of bench/ingest.py (bench/bare_app.py);
  batch   POST /api/metrics/batch, the 1000-point bodies of bench/ingest.py (synchronous 201);
  ack     the same bodies with `Prefer: respond-async` (the 202: validation, outbox row, send);
  drain   batches queued by 202s, written by the task a worker runs for the first one's
          message (it follows with every pending batch, in groups of up to 10,000 points).

With --plain nothing is profiled: the per-unit times alone, without cProfile's overhead; with
--collector default the garbage collector keeps CPython's settings (glowing_fiesta/gc_tuning.py).

Requests go through Django's WSGI handler and the whole middleware stack (called as gunicorn calls
it, DEBUG off, plain HTTP), against a scratch database (gf_bench_profile) and a Celery queue that no
worker reads. Prints the wall and CPU time per unit (CPU is this process's: what is left of the
wall time is waiting, mostly on PostgreSQL and Redis) and the functions with the most time of
their own and in total.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import sys
import time

from bench import _common
from bench._loads import BODIES_PER_CLIENT, batch_points, single_bodies

DATABASE_NAME = "gf_bench_profile"
WARMUP = 50


def _wsgi_post(key: str):
    """POST through Django's WSGI handler as gunicorn calls it (no test client, no signals)."""
    from django.core.handlers.wsgi import WSGIHandler

    handler = WSGIHandler()

    def post(path: str, body: bytes, extra: dict[str, str]) -> tuple[int, bytes]:
        environ = {
            "REQUEST_METHOD": "POST",
            "PATH_INFO": path,
            "QUERY_STRING": "",
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "8000",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REMOTE_ADDR": "127.0.0.1",
            "CONTENT_TYPE": "application/json",
            "CONTENT_LENGTH": str(len(body)),
            "HTTP_HOST": "127.0.0.1:8000",
            "HTTP_X_API_KEY": key,
            "wsgi.input": io.BytesIO(body),
            "wsgi.url_scheme": "http",
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": False,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
            "wsgi.version": (1, 0),
            **extra,
        }
        status: list[str] = []
        chunks = handler(environ, lambda s, h, exc_info=None: status.append(s))
        content = b"".join(chunks)
        if hasattr(chunks, "close"):
            chunks.close()
        return int(status[0].split()[0]), content

    return post


def _requests(key: str, kind: str, count: int):
    """A function that sends request number i, checking its status."""
    post = _wsgi_post(key)
    if kind in ("single", "bare"):
        bodies = single_bodies()
        path = "/api/metrics/counter" if kind == "single" else "/bare/counter"
        status, headers = 201, {}
    else:
        now = time.time()
        bodies = [
            json.dumps({"points": batch_points(0, v, now)}).encode()
            for v in range(BODIES_PER_CLIENT)
        ]
        path = "/api/metrics/batch"
        status, headers = (202, {"HTTP_PREFER": "respond-async"}) if kind == "ack" else (201, {})

    def send(i: int) -> None:
        code, content = post(path, bodies[i % len(bodies)], headers)
        if code != status:
            raise SystemExit(f"bench: {path} answered {code}: {content[:300]!r}")

    return send


def _drain_queued(key: str, count: int):
    """Queue `count` batches with 202s (not profiled), then return a function that runs the task
    a worker runs for the first one's message, which writes them all (its own batch, then every
    pending one, in groups)."""
    from metrics.models import IngestBatch
    from metrics.tasks import process_metric_batch

    send = _requests(key, "ack", count)
    for i in range(count):
        send(i)
    first = IngestBatch.objects.filter(state=IngestBatch.State.PENDING).order_by("pk").first()

    def process() -> None:
        process_metric_batch.apply(args=[first.pk]).get()
        left = IngestBatch.objects.exclude(state=IngestBatch.State.DONE).count()
        if left:
            raise SystemExit(f"bench: {left} batches not written by the task")

    return process


def _access_log_discarded() -> None:
    """The JSON log lines are still formatted and written, as under gunicorn, but to /dev/null."""
    import logging

    sink = open(os.devnull, "w")  # noqa: SIM115 - open for the life of the process
    for logger in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]:
        for handler in getattr(logger, "handlers", []):
            if isinstance(handler, logging.StreamHandler) and handler.stream in (
                sys.stdout,
                sys.stderr,
            ):
                handler.setStream(sink)


def run(kind: str, count: int, top: int, key: str, *, plain: bool, collector: str) -> None:
    import django

    django.setup()
    from django.db import connection

    _access_log_discarded()

    if kind == "drain":
        _drain_queued(key, WARMUP // 10)()
        drain = _drain_queued(key, count)
        label = "queued batch of 1000, written by one task run that follows them all"
    else:
        unit = _requests(key, kind, count)
        for i in range(WARMUP):
            unit(i)
        label = {
            "single": "single counter",
            "bare": "bare view + one INSERT",
            "batch": "batch of 1000 (201)",
            "ack": "batch of 1000 (202)",
        }[kind]
    if collector == "settled":
        # As gunicorn's post_worker_init and the Celery pool do, once the code is loaded.
        from glowing_fiesta.gc_tuning import gc_settle

        gc_settle()
    profiler = cProfile.Profile()
    wall, cpu = time.perf_counter(), time.process_time()
    if not plain:
        profiler.enable()
    if kind == "drain":
        drain()
    else:
        for i in range(count):
            unit(i)
    profiler.disable()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    connection.close()
    print(f"{kind}: {count} x {label}; collector {collector}" + ("; not profiled" if plain else ""))
    print(
        f"per unit: wall {wall / count * 1000:.3f} ms, CPU of this process {cpu / count * 1000:.3f} ms "
        f"({cpu / wall:.0%} of wall)"
    )
    if plain:
        return
    for order in ("tottime", "cumulative"):
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).strip_dirs().sort_stats(order).print_stats(top)
        print(f"\n--- top {top} by {order} ---")
        print("\n".join(line for line in out.getvalue().splitlines() if line.strip())[:20000])


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=["single", "bare", "batch", "ack", "drain"])
    parser.add_argument(
        "--count", type=int, default=0, help="units profiled (default: 2000 single, 200 others)"
    )
    parser.add_argument("--top", type=int, default=30, help="functions listed per ordering")
    parser.add_argument(
        "--plain", action="store_true", help="time without cProfile (its overhead left out)"
    )
    parser.add_argument(
        "--collector",
        choices=["settled", "default"],
        default="settled",
        help="garbage collector as the service's processes run it, or CPython's defaults",
    )
    args = parser.parse_args(argv)
    count = args.count or (2000 if args.kind in ("single", "bare") else 200)
    database_url = _common.required_env("DATABASE_URL")
    redis_url = _common.required_env("REDIS_URL")
    setup_env = _common.service_env(database_url, redis_url)
    with (
        _common.scratch_database(database_url, DATABASE_NAME, setup_env) as bench_url,
        _common.own_queue(redis_url) as queue,
    ):
        env = _common.service_env(bench_url, redis_url, CELERY_QUEUE=queue)
        key = _common.api_key_create(env, name="bench-profile", rate_limit=10_000_000)
        if args.kind == "bare":
            env["DJANGO_SETTINGS_MODULE"] = "bench.bare_settings"
        os.environ.update(env)
        run(args.kind, count, args.top, key, plain=args.plain, collector=args.collector)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
