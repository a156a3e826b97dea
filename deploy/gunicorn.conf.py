"""gunicorn settings for the Glowing Fiesta web service.

    gunicorn -c deploy/gunicorn.conf.py

Command-line flags and GUNICORN_CMD_ARGS (e.g. "--workers 8 --bind 0.0.0.0:8000") override any
value here, so a host sizes the service in its environment file without editing this one. See
docs/DEPLOYMENT.md for the sizing rule and docs/PERFORMANCE.md for the measurements behind it.
"""

import json
import os
import subprocess
import sys

from gunicorn import util

wsgi_app = "glowing_fiesta.wsgi:application"

# Loopback by default: a reverse proxy (TLS, client body limits, slow clients) sits in front.
bind = "127.0.0.1:8000"

# Sync workers: each process serves one request at a time with one persistent PostgreSQL
# connection (DB_CONN_MAX_AGE), so connections = workers. A request is short and mostly CPU (JSON,
# validation) with a few round trips to PostgreSQL and Redis, so 2 x cores processes keep the
# cores busy while some wait. On 2 cores, 4 sync workers beat 2, 3 and 6, and 2 workers x 4
# threads matched them for single points with a 50% higher p95 (GIL queueing) and fewer batch
# points/s: docs/PERFORMANCE.md, "Ingestion".
worker_class = "sync"
workers = 4
threads = 1

# A batch of 1000 points takes tens of milliseconds; 30 s means a stuck worker, not a slow one.
timeout = 30
graceful_timeout = 30
# Only used by threaded workers; sync workers close the connection after each response.
keepalive = 5

# Recycle workers now and then so a slow leak can never grow without bound; the jitter keeps
# them from all restarting at once. Their in-process caches simply warm up again.
max_requests = 20000
max_requests_jitter = 2000

# Heartbeat files on tmpfs: a busy disk must not make the arbiter think workers hang.
worker_tmp_dir = "/dev/shm"  # noqa: S108 - heartbeat files only, nothing secret

# Reloads and shutdowns come from systemd signals (HUP, TERM); no control socket is needed, and
# its default location would be the service user's home directory.
control_socket_disable = True

# The application logs every request itself (glowing_fiesta.logging, JSON on stdout, never the
# query string or a header); gunicorn's access log would duplicate it. gunicorn's own few lines
# (boot, worker timeouts and restarts) go to stderr in its plain format.
accesslog = None
errorlog = "-"
loglevel = "info"

# Requests gunicorn refuses before the application sees them (docs/DEPLOYMENT.md, "gunicorn's
# limits"): a request line (method, path and query string) over 8190 bytes gets 414; more than
# 50 header fields, or one over 8190 bytes, gets 431; a malformed request 400. The proxy in front
# should refuse first (deploy/nginx/glowing-fiesta.conf); these hold if it does not.
#
# The request line: the longest query the service takes is GET /api/metrics/{name} with a
# 191-character name, ten tag filters (a series holds at most ten tags) of a 64-character key
# and a 191-character value, both timestamps, the longest zone name and group_by: 7,473 bytes
# with every character of the name, the values, the timestamps and the zone percent-encoded
# (tests/glowing_fiesta/test_gunicorn_conf.py computes it). 8190 is gunicorn's maximum.
limit_request_line = 8190
limit_request_fields = 50
limit_request_field_size = 8190


def _write_problem(sock, status_int, reason, mesg):
    """gunicorn's own error answers in the service's one error shape (RFC 9457 problem+json)
    instead of its HTML page. Replaces gunicorn.util.write_error, which its workers call."""
    slug = reason.lower().replace(" ", "-")
    body = json.dumps(
        {
            "type": f"urn:glowing-fiesta:problem:{slug}",
            "title": reason,
            "status": status_int,
            "detail": mesg or reason,
        }
    ).encode()
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\n"
        "Connection: close\r\n"
        "Content-Type: application/problem+json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode("latin-1")
    util.write_nonblock(sock, head + body)


util.write_error = _write_problem


# Self-monitoring: with PROMETHEUS_MULTIPROC_DIR set, every worker keeps its figures in files of
# that directory and GET /metrics sums them (glowing_fiesta/monitoring/multiproc.py).
#
# The hooks run in the arbiter, which must never import the application: workers are forked from
# it, so a worker started after a reload (HUP, `systemctl reload`) would inherit the old code of
# every module the arbiter holds (the settings and the Celery app among them) instead of reading
# the new release from disk.
PRUNE = "from glowing_fiesta.monitoring import multiproc; multiproc.directory_prune()"


def on_starting(server):
    """Before the first worker: drop the files of processes of an earlier run (in a child
    process, see above)."""
    subprocess.run([sys.executable, "-c", PRUNE], check=False, timeout=120)  # noqa: S603


def post_worker_init(worker):
    """In the worker, once the application is loaded: settle the garbage collector
    (glowing_fiesta/gc_tuning.py; a quarter less CPU per batch)."""
    from glowing_fiesta.gc_tuning import gc_settle

    gc_settle()


def child_exit(server, worker):
    """A worker exited: its live-only gauges go; its counters stay in the sum. prometheus_client
    reads the directory from PROMETHEUS_MULTIPROC_DIR itself."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
