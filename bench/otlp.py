"""OTLP/HTTP and Prometheus remote-write throughput, beside the JSON batch endpoint in the same run.

    make bench-otlp                           # or, with DATABASE_URL and REDIS_URL set:
    python -m bench.otlp --rounds 3          # medians of three rounds

Three phases against one gunicorn (deploy/gunicorn.conf.py, DEBUG off), each from --clients
processes, 1000 points per request:

  (1) JSON batches: POST /api/metrics/batch, the workload of bench/ingest.py (its baseline);
  (1b) JSON batches shaped like the exports below: 1000 series, one point each;
  (2) OTLP: POST /v1/metrics, protobuf ExportMetricsServiceRequests of 1000 data points, half
      cumulative monotonic sums (each turned into an increment through its stream's state),
      half gauges, one data point per stream per request, as an SDK exports them;
  (3) remote write: POST /api/v1/write, snappy WriteRequests of 1000 series with one sample
      each, half `_total` counters (cumulative, as (2)), half gauges.

Every OTLP and remote-write request carries later timestamps and larger totals, so every
counter data point is a stored increment; the requests are built before each phase starts. Printed: points/s of each and the ratios of (2) and (3) to (1) and (1b).
Everything runs in a database of its own (gf_bench_otlp, dropped at exit).
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import sys
import time
from dataclasses import dataclass

from bench import _common, _loads, _options, _runners, _servers, _workers
from bench._loads import BATCH_SIZE, BODIES_PER_CLIENT
from bench._tallies import Tally, Window, merge, tally_check, window_after

DATABASE_NAME = "gf_bench_otlp"
COUNTERS = [f"bench.otlp.counter.{i:02d}" for i in range(20)]
GAUGES = [f"bench.otlp.gauge.{i:02d}" for i in range(20)]
SLOTS = 25  # 40 metrics x 25 slots = 1000 streams per client, one data point each per request

_fork = multiprocessing.get_context("fork")


def otlp_body(client: int, request_number: int, start_ns: int, now_ns: int) -> bytes:
    """One export of 1000 data points: every stream's total grows by 1..5 per request."""
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
        ExportMetricsServiceRequest,
    )
    from opentelemetry.proto.metrics.v1 import metrics_pb2

    export = ExportMetricsServiceRequest()
    resource_metrics = export.resource_metrics.add()
    attribute = resource_metrics.resource.attributes.add(key="service.name")
    attribute.value.string_value = f"bench-{client}"
    scope = resource_metrics.scope_metrics.add()
    scope.scope.name = "bench"
    for index, name in enumerate(COUNTERS):
        metric = scope.metrics.add(name=name)
        metric.sum.is_monotonic = True
        metric.sum.aggregation_temporality = metrics_pb2.AGGREGATION_TEMPORALITY_CUMULATIVE
        for slot in range(SLOTS):
            point = metric.sum.data_points.add(
                start_time_unix_nano=start_ns,
                time_unix_nano=now_ns,
                as_int=(request_number + 1) * (1 + (index + slot) % 5),
            )
            point.attributes.add(key="slot").value.string_value = str(slot)
    for index, name in enumerate(GAUGES):
        metric = scope.metrics.add(name=name)
        for slot in range(SLOTS):
            point = metric.gauge.data_points.add(
                time_unix_nano=now_ns, as_double=float((request_number * 7 + index + slot) % 97)
            )
            point.attributes.add(key="slot").value.string_value = str(slot)
    return export.SerializeToString()


def remote_write_body(client: int, request_number: int, now_ms: int) -> bytes:
    """One WriteRequest of 1000 series, one sample each; counters grow by 1..5 per request."""
    import cramjam

    from protocols.prometheus_pb import WriteRequest

    request = WriteRequest()
    for index in range(20):
        for slot in range(SLOTS):
            for kind in ("total", "gauge"):
                series = request.timeseries.add()
                name = f"bench_prw_{index:02d}_{'requests_total' if kind == 'total' else 'depth'}"
                series.labels.add(name="__name__", value=name)
                series.labels.add(name="host", value=f"host-{client}")
                series.labels.add(name="slot", value=str(slot))
                value = (
                    (request_number + 1) * (1 + (index + slot) % 5)
                    if kind == "total"
                    else float((request_number * 7 + index + slot) % 97)
                )
                series.samples.add(value=value, timestamp=now_ms)
    return bytes(cramjam.snappy.compress_raw(request.SerializeToString()))


def streams_batch_body(client: int, variant: int, now: float) -> bytes:
    """A JSON batch shaped like one export: 1000 series (the same 40 metrics x 25 tag sets),
    one point each, so that it writes as many series and rollup rows as (2) and (3)."""
    points = []
    for index, name in enumerate(COUNTERS + GAUGES):
        counter = index < len(COUNTERS)
        for slot in range(SLOTS):
            points.append(
                {
                    "type": "counter" if counter else "value",
                    "name": name.replace("otlp", "json"),
                    "value": 1 + (index + slot) % 5 if counter else float((variant + slot) % 97),
                    "timestamp": round(now - variant * 0.01, 3),
                    "tags": {"service": f"bench-{client}", "slot": str(slot)},
                }
            )
    return json.dumps({"points": points}).encode()


def run_streams_batch_http(host: str, port: int, key: str, clients: int, window: Window) -> Tally:
    now = time.time()
    bodies = [
        [streams_batch_body(c, v, now) for v in range(BODIES_PER_CLIENT)] for c in range(clients)
    ]
    return _workers.batch_http_run(host, port, key, bodies, window)


def protocol_bodies(protocol: str, client: int, count: int) -> list[bytes]:
    """`count` requests built ahead, so that clients spend no CPU on them while measured:
    each is a millisecond later than the one before, with larger totals."""
    base_ns = time.time_ns()
    if protocol == "otlp":
        return [otlp_body(client, n, base_ns - 10**9, base_ns + n * 10**6) for n in range(count)]
    return [remote_write_body(client, n, base_ns // 10**6 + n) for n in range(count)]


def _protocol_client(args: tuple) -> Tally:
    host, port, key, protocol, bodies, window = args
    if protocol == "otlp":
        path, ok = "/v1/metrics", 200
        headers = {"Content-Type": "application/x-protobuf", "X-API-Key": key}
    else:
        path, ok = "/api/v1/write", 204
        headers = {
            "Content-Type": "application/x-protobuf",
            "Content-Encoding": "snappy",
            "X-Prometheus-Remote-Write-Version": "0.1.0",
            "Authorization": f"Bearer {key}",
        }
    conn = http.client.HTTPConnection(host, port, timeout=60)
    tally = Tally()
    for body in bodies:  # in order: a stream's totals only grow
        if time.time() >= window.end:
            break
        conn.request("POST", path, body, headers)
        response = conn.getresponse()
        payload = response.read()
        finished = time.time()
        if not window.start <= finished <= window.end:
            continue
        # An OTLP answer with a partial_success is longer than the empty message.
        if response.status == ok and (protocol != "otlp" or not payload):
            tally.done += BATCH_SIZE
        else:
            tally.errors += 1
            tally.first_error = tally.first_error or f"{response.status} {payload[:300]!r}"
    else:
        tally.errors += 1
        tally.first_error = tally.first_error or "ran out of bodies: raise --bodies"
    conn.close()
    return tally


def run_protocol(
    host: str, port: int, key: str, protocol: str, clients: int, args: argparse.Namespace
) -> Tally:
    jobs = [
        (host, port, key, protocol, protocol_bodies(protocol, c, args.bodies), None)
        for c in range(clients)
    ]
    window = window_after(args.warmup, args.duration)  # after the bodies are built
    jobs = [(*job[:-1], window) for job in jobs]
    with _fork.Pool(clients) as pool:
        return merge(pool.map(_protocol_client, jobs))


@dataclass
class Round:
    json: float
    json_streams: float
    otlp: float
    remote_write: float


def run_round(args: argparse.Namespace, env: dict, key: str) -> Round:
    with _servers.gunicorn(env, workers=args.workers) as (host, port):
        _common.log(f"(1) JSON batches, {args.clients} clients")
        batch = _workers.batch_http_run(
            host,
            port,
            key,
            _loads.clients_batch_bodies(args.clients, time.time()),
            window_after(args.warmup, args.duration),
        )
        tally_check("(1) JSON batches", batch)
        _common.log(f"(1b) JSON batches of 1000 series, {args.clients} clients")
        shaped = run_streams_batch_http(
            host, port, key, args.clients, window_after(args.warmup, args.duration)
        )
        tally_check("(1b) JSON batches of 1000 series", shaped)
        _common.log(f"(2) OTLP, {args.clients} clients")
        otlp = run_protocol(host, port, key, "otlp", args.clients, args)
        tally_check("(2) OTLP", otlp)
        _common.log(f"(3) remote write, {args.clients} clients")
        prw = run_protocol(host, port, key, "remote_write", args.clients, args)
        tally_check("(3) remote write", prw)
    return Round(
        json=batch.done / args.duration,
        json_streams=shaped.done / args.duration,
        otlp=otlp.done / args.duration,
        remote_write=prw.done / args.duration,
    )


def report(args: argparse.Namespace, machine: str, rounds: list[Round]) -> None:
    def med(attr: str) -> float:
        return _runners.median(rounds, attr)

    lines = [
        f"machine:  {machine}",
        f"service:  gunicorn, {args.workers} sync workers, deploy/gunicorn.conf.py, DEBUG off",
        f"load:     {args.clients} client processes, 1000 points per request, "
        f"{args.warmup:g} s warm-up + {args.duration:g} s measured per phase; "
        f"median of {len(rounds)} round(s)",
        "",
        f"(1)  JSON batch, 1000 points on 200 series   {med('json'):>10,.0f} points/s",
        f"(1b) JSON batch, 1000 points on 1000 series  {med('json_streams'):>10,.0f} points/s",
        f"(2)  OTLP export of 1000 data points         {med('otlp'):>10,.0f} data points/s   "
        f"(2)/(1) = {med('otlp') / med('json'):.0%}   (2)/(1b) = "
        f"{med('otlp') / med('json_streams'):.0%}",
        f"(3)  remote write of 1000 samples            {med('remote_write'):>10,.0f} samples/s       "
        f"(3)/(1) = {med('remote_write') / med('json'):.0%}   (3)/(1b) = "
        f"{med('remote_write') / med('json_streams'):.0%}",
    ]
    lines += _runners.round_lines(
        rounds,
        lambda r: (
            f"(1) {r.json:,.0f}  (1b) {r.json_streams:,.0f}  (2) {r.otlp:,.0f}  "
            f"(3) {r.remote_write:,.0f}"
        ),
    )
    print("\n".join(lines), flush=True)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    _options.round_options(parser, clients=3)
    parser.add_argument(
        "--bodies", type=int, default=300, help="requests built ahead per client and phase"
    )
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    with _runners.scratch(DATABASE_NAME, key_name="bench-otlp") as run:
        rounds = _runners.rounds_run(args.rounds, lambda n: run_round(args, run.env, run.key))
    report(args, run.machine, rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
