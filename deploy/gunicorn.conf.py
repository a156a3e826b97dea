"""gunicorn settings for the Glowing Fiesta web service.

    gunicorn -c deploy/gunicorn.conf.py

Command-line flags and GUNICORN_CMD_ARGS (e.g. "--workers 8 --bind 0.0.0.0:8000") override any
value here, so a host sizes the service in its environment file without editing this one. See
docs/DEPLOYMENT.md for the sizing rule and docs/PERFORMANCE.md for the measurements behind it.
"""

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


# Self-monitoring: with PROMETHEUS_MULTIPROC_DIR set, every worker keeps its figures in files of
# that directory and GET /metrics sums them (glowing_fiesta/monitoring/multiproc.py).
def on_starting(server):
    """Before the first worker: drop the files of processes of an earlier run."""
    from glowing_fiesta.monitoring import multiproc

    multiproc.directory_prune()


def child_exit(server, worker):
    """A worker exited: its live-only gauges go; its counters stay in the sum."""
    from glowing_fiesta.monitoring import multiproc

    multiproc.process_dead(worker.pid)
