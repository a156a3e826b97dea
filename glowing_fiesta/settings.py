"""Settings: the one place the application reads its environment, through the readers of
`glowing_fiesta/env.py`.

Every variable is documented in `.env.example`: what it means, its bounds and its default. The
comments here say why a setting is as it is, where `.env.example` does not. Bad values stop
start-up with a one-line message naming the variable, so a misconfigured deploy fails loudly
before it serves anything.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import dj_database_url

from glowing_fiesta.env import (
    ConfigError,
    env_address,
    env_bool,
    env_choice,
    env_file,
    env_header_name,
    env_int,
    env_list,
    env_origins,
    env_process_role,
    env_rate,
    env_required,
    env_secret,
    env_str,
    env_time,
    env_writable_dir,
)
from glowing_fiesta.logging import logging_config

BASE_DIR = Path(__file__).resolve().parent.parent

DEBUG = env_bool("DJANGO_DEBUG", default=False)

# Development placeholders are accepted only with DEBUG on; production must set real values.
SECRET_KEY = env_secret(
    "DJANGO_SECRET_KEY", debug=DEBUG, placeholder="dev-only-insecure-secret-key"
)
API_KEY_PEPPER = env_secret("API_KEY_PEPPER", debug=DEBUG, placeholder="dev-only-insecure-pepper")

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "127.0.0.1,localhost,testserver")

DATABASE_URL = env_required("DATABASE_URL", hint="make run / make test start an embedded one")
REDIS_URL = env_required("REDIS_URL", hint="make run / make test start an embedded one")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "corsheaders",
    "csp",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "glowing_fiesta",
    "apikeys",
    "idempotency",
    "metrics",
    "protocols",
    "promql",
    "retention",
    "selfmetrics",
    "alerting",
]

MIDDLEWARE = [
    "glowing_fiesta.logging.RequestLogMiddleware",
    "glowing_fiesta.monitoring.middleware.RequestMetricsMiddleware",
    # Before anything reads the body: one cut off before its Content-Length or its last chunk
    # is refused (400 body-incomplete), whatever endpoint reads it.
    "glowing_fiesta.middleware.BodyCompleteMiddleware",
    # Before anything reads the body: a chunked upload gets a length (or a 411/413).
    "glowing_fiesta.middleware.ChunkedBodyMiddleware",
    # Redirects browser pages to https; HSTS, nosniff, Referrer-Policy, COOP on every response.
    "django.middleware.security.SecurityMiddleware",
    # Static files (docs assets, admin) straight from the process, no web server needed.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # Before the https check, so a browser app can read the 403 it gets over plain HTTP.
    "corsheaders.middleware.CorsMiddleware",
    # API paths over plain HTTP are refused here, before authentication looks up any key.
    "glowing_fiesta.middleware.HttpsRequiredMiddleware",
    "glowing_fiesta.middleware.ApiCacheControlMiddleware",
    "csp.middleware.CSPMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "glowing_fiesta.urls"
WSGI_APPLICATION = "glowing_fiesta.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# Persistent connections with health checks rather than a pool: gunicorn sync workers and Celery
# prefork processes each serve one request/task at a time, so one connection per process is all a
# pool would hand out, and this keeps the sizing rule simple (docs/DEPLOYMENT.md).
DATABASES = {
    "default": dj_database_url.parse(
        DATABASE_URL,
        conn_max_age=env_int("DB_CONN_MAX_AGE", 300, minimum=0, maximum=86400),
        conn_health_checks=True,
    )
}
# PostgreSQL with a health check that reads the socket instead of sending `SELECT 1`.
DATABASES["default"]["ENGINE"] = "glowing_fiesta.db"
DATABASES["default"].setdefault("OPTIONS", {})
# Aggregation queries are bounded; a runaway one is cancelled rather than holding a connection.
DB_STATEMENT_TIMEOUT_MS = env_int("DB_STATEMENT_TIMEOUT_MS", 5000, minimum=100, maximum=600000)
# A write behind a lock (a long migration, a manual LOCK TABLE) gives up rather than holding its
# worker for the whole statement timeout while requests pile up behind it.
DB_LOCK_TIMEOUT_MS = env_int("DB_LOCK_TIMEOUT_MS", 1000, minimum=10, maximum=600000)
DATABASES["default"]["OPTIONS"]["options"] = (
    f"-c statement_timeout={DB_STATEMENT_TIMEOUT_MS} -c lock_timeout={DB_LOCK_TIMEOUT_MS}"
)
# Statements with server-side parameters (the points-and-rollups write of metrics/storage.py)
# are prepared after their fifth use on a connection: 0.49 -> 0.19 ms of PostgreSQL CPU for a
# single point (docs/PERFORMANCE.md). The ORM's queries bind client-side and are never prepared.
DB_PREPARED_STATEMENTS = env_bool("DB_PREPARED_STATEMENTS", default=True)
DATABASES["default"]["OPTIONS"]["prepare_threshold"] = 5 if DB_PREPARED_STATEMENTS else None
# Deleting a metric rewrites every page holding one of its points: far longer than any request
# statement for a big metric, so its transaction gets a limit of its own.
METRIC_DELETE_TIMEOUT_MS = env_int(
    "METRIC_DELETE_TIMEOUT_MS", 120_000, minimum=1000, maximum=3_600_000
)

# What this process is: its PostgreSQL application_name, and whether it writes its own figures.
PROCESS_ROLE = env_process_role("PROCESS_ROLE", sys.argv)
DB_APPLICATION_PREFIX = "glowing-fiesta-"
DATABASES["default"]["OPTIONS"]["application_name"] = DB_APPLICATION_PREFIX + PROCESS_ROLE
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
# A streaming replica for the reads that opt in (glowing_fiesta/db/replica.py): aggregation
# queries, discovery, the chart and the Prometheus query API. Unset: every read on the primary.
# Its connections get the primary's options and a short connect timeout, so a replica that is
# down costs a read two seconds at most, once per DOWN_RECHECK_SECONDS, before the primary answers.
DATABASE_REPLICA_URL = env_str("DATABASE_REPLICA_URL")
REPLICA_MAX_LAG_SECONDS = env_int("REPLICA_MAX_LAG_SECONDS", 5, minimum=1, maximum=3600)
if DATABASE_REPLICA_URL:
    DATABASES["replica"] = dj_database_url.parse(
        DATABASE_REPLICA_URL,
        conn_max_age=DATABASES["default"]["CONN_MAX_AGE"],
        conn_health_checks=True,
    )
    DATABASES["replica"]["ENGINE"] = "glowing_fiesta.db"
    DATABASES["replica"]["OPTIONS"] = {
        **DATABASES["default"]["OPTIONS"],
        **DATABASES["replica"].get("OPTIONS", {}),
        "connect_timeout": 2,  # libpq's smallest
        "application_name": DB_APPLICATION_PREFIX + PROCESS_ROLE + "-replica",
    }
    # Under the test runner the replica is the test database itself: nothing is created for it.
    DATABASES["replica"]["TEST"] = {"MIRROR": "default"}
DATABASE_ROUTERS = ["glowing_fiesta.db.replica.ReplicaRouter"]

CACHES = {
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "gf",
        "OPTIONS": {
            "CLIENT_CLASS": "django_redis.client.DefaultClient",
            # Short timeouts: Redis only backs rate limits and caches, and a dead Redis must
            # cost a request milliseconds, not seconds.
            "SOCKET_CONNECT_TIMEOUT": 0.25,
            "SOCKET_TIMEOUT": 0.25,
        },
    }
}

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = env_str("STATIC_ROOT") or None
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
# whitenoise serves files straight from the apps' static folders (no collectstatic step for
# `make run`, the tests or a fresh deployment); collected files in STATIC_ROOT are served too.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

# --- transport security (docs/SECURITY.md) ---------------------------------------------------
# HTTPS by default: API paths over plain HTTP are refused (glowing_fiesta.middleware).
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", default=True)
# Answered over plain HTTP whatever the setting: load balancers probe that way.
HTTPS_EXEMPT_PATHS = ("/healthz", "/readyz")
# API calls arrive under these prefixes (/v1/ is OTLP/HTTP's standard path); the paths under
# them that are browser pages (redirected like the admin) are listed apart.
# /write: the InfluxDB 1.x write path, at the root where its clients send it; /metrics: the
# Prometheus scrape, which carries a key too.
API_PATH_PREFIXES = ("/api/", "/v1/", "/write", "/metrics")
API_BROWSER_PATHS = ("/api/docs/", "/api/redoc/", "/api/schema/")
# SecurityMiddleware's redirect skips the API (refused instead) and the probes.
SECURE_REDIRECT_EXEMPT = [
    r"^api/(?!docs/|redoc/|schema/)",
    r"^v1/",
    r"^write$",
    r"^metrics$",
    r"^healthz$",
    r"^readyz$",
]
_proxy_ssl_header = env_header_name("SECURE_PROXY_SSL_HEADER")
if _proxy_ssl_header:
    SECURE_PROXY_SSL_HEADER = (
        "HTTP_" + _proxy_ssl_header.upper().replace("-", "_"),
        "https",
    )
SECURE_HSTS_SECONDS = env_int(
    "SECURE_HSTS_SECONDS",
    365 * 24 * 3600 if SECURE_SSL_REDIRECT else 0,
    minimum=0,
    maximum=2 * 365 * 24 * 3600,
)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
# Preloading is the domain owner's decision: off unless asked for, Django's reminder silenced.
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", default=False)
SILENCED_SYSTEM_CHECKS = ["security.W021"]
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", default=True)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", default=True)
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", "")
CSRF_FAILURE_VIEW = "glowing_fiesta.exceptions.csrf_failure"

# --- response headers (Mozilla's HTTP security-header guidance) -----------------------------
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# No inline script, style or foreign origin on any page; the Redoc page alone adds what its
# bundle needs (inline styles and a blob: worker, glowing_fiesta/docs.py).
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'none'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
}

# --- CORS (browser apps sending metrics) ------------------------------------------------------
CORS_ALLOWED_ORIGINS = env_origins("CORS_ALLOWED_ORIGINS", "")
CORS_URLS_REGEX = r"^/(api/(?!docs/|redoc/|schema/)|v1/|write$).*$"
CORS_ALLOW_METHODS = ["GET", "HEAD", "OPTIONS", "POST"]
CORS_ALLOW_HEADERS = [
    "accept",
    "authorization",
    "content-type",
    "idempotency-key",
    "prefer",
    "x-api-key",
    "x-request-id",
]
CORS_EXPOSE_HEADERS = [
    "Idempotent-Replayed",
    "Location",
    "Preference-Applied",
    "Retry-After",
    "X-RateLimit-Limit",
    "X-RateLimit-Remaining",
    "X-RateLimit-Reset",
    "X-Request-ID",
]
# Keys travel in headers, never in cookies: a cross-origin request needs no credentials mode.
CORS_ALLOW_CREDENTIALS = False
CORS_PREFLIGHT_MAX_AGE = 3600

# --- brute force ---------------------------------------------------------------------------
AUTH_FAILURE_RATE = env_rate("AUTH_FAILURE_RATE", "100/minute")
# Anything a client writes to X-Forwarded-For left of what our proxies wrote is ignored.
TRUSTED_PROXY_COUNT = env_int("TRUSTED_PROXY_COUNT", 0, minimum=0, maximum=10)

# Bodies above this are refused with 413 before they are parsed.
DATA_UPLOAD_MAX_MEMORY_SIZE = 512 * 1024

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["apikeys.authentication.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PARSER_CLASSES": ["glowing_fiesta.parsers.StrictJSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "glowing_fiesta.exceptions.problem_exception_handler",
    "UNAUTHENTICATED_USER": None,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Glowing Fiesta API",
    "DESCRIPTION": "Ingest counters and values over HTTP; read back aggregated time series.",
    "VERSION": "0.1.0",
    # 3.1 for JSON Schema 2020-12: propertyNames states the tag-key rule.
    "OAS_VERSION": "3.1.0",
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "glowing_fiesta.openapi.request_bodies_required",
    ],
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_AUTHENTICATION": [],
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    # Swagger UI and Redoc from drf-spectacular-sidecar's static files: no CDN, works offline.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # No badge fetched from the public validator service.
    "SWAGGER_UI_SETTINGS": {"validatorUrl": None},
}

# API keys
API_KEY_DEFAULT_RATE_LIMIT = env_int("API_KEY_DEFAULT_RATE_LIMIT", 600, minimum=1, maximum=10**7)
API_KEY_CACHE_SECONDS = env_int("API_KEY_CACHE_SECONDS", 5, minimum=0, maximum=5)

# Metrics
METRIC_MAX_SERIES = env_int("METRIC_MAX_SERIES", 1000, minimum=1, maximum=1_000_000)
# InfluxDB line protocol: also the most a gzip bomb can make a request hold in memory.
INFLUX_MAX_BODY_BYTES = env_int(
    "INFLUX_MAX_BODY_BYTES", 32 * 1024 * 1024, minimum=1024, maximum=1024 * 1024 * 1024
)
QUERY_PERCENTILE_TIMEOUT_MS = env_int(
    "QUERY_PERCENTILE_TIMEOUT_MS", 3000, minimum=1, maximum=600000
)
QUERY_SLOW_MS = env_int("QUERY_SLOW_MS", 250, minimum=0, maximum=600000)
# OTLP/HTTP and remote write: a compressed body is inflated in steps and abandoned once past its
# cap (checked before decompression too), so it never takes more memory than this.
OTLP_MAX_BODY_BYTES = env_int("OTLP_MAX_BODY_BYTES", 20 * 2**20, minimum=2**10, maximum=2**30)
REMOTE_WRITE_MAX_BODY_BYTES = env_int(
    "REMOTE_WRITE_MAX_BODY_BYTES", 20 * 2**20, minimum=2**10, maximum=2**30
)
# The Prometheus query API (docs/PROMQL.md): a query is stopped after PROMQL_TIMEOUT_SECONDS
# (503 timeout, its statements cancelled); a selector matching more than PROMQL_MAX_SERIES
# series is refused (422); an instant selector looks back PROMQL_LOOKBACK_DELTA_SECONDS for the
# latest sample, as Prometheus's --query.lookback-delta (5 minutes).
PROMQL_TIMEOUT_SECONDS = env_int("PROMQL_TIMEOUT_SECONDS", 60, minimum=1, maximum=3600)
PROMQL_MAX_SERIES = env_int("PROMQL_MAX_SERIES", 10_000, minimum=1, maximum=1_000_000)
PROMQL_LOOKBACK_DELTA_SECONDS = env_int(
    "PROMQL_LOOKBACK_DELTA_SECONDS", 300, minimum=1, maximum=86400
)
# Raw points of recent whole hours each web process keeps for the queries that read them
# (promql/hours.py), checked against the hour rollups' counts at every use; 0 keeps none.
PROMQL_HOURS_CACHE_POINTS = env_int(
    "PROMQL_HOURS_CACHE_POINTS", 2_000_000, minimum=0, maximum=100_000_000
)

# Retention: raw points and minute rollups; hour and day rollups are kept longer.
RETENTION_DAYS = env_int("RETENTION_DAYS", 90, minimum=1, maximum=3650)
ROLLUP_RETENTION_DAYS = env_int("ROLLUP_RETENTION_DAYS", 730, minimum=1, maximum=3650)
if ROLLUP_RETENTION_DAYS < RETENTION_DAYS:
    raise ConfigError(
        f"ROLLUP_RETENTION_DAYS ({ROLLUP_RETENTION_DAYS}) must be at least "
        f"RETENTION_DAYS ({RETENTION_DAYS})"
    )
RETENTION_RUN_AT = env_time("RETENTION_RUN_AT", "03:30")

# Celery. The broker carries batch ids only: the ingest_batches table in PostgreSQL is the record
# of work, and every task is safe to run twice. So each setting below prefers running a task
# again to losing it (docs/DEPLOYMENT.md, "Queue").
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL") or REDIS_URL
CELERY_TASK_DEFAULT_QUEUE = env_str("CELERY_QUEUE", "glowing_fiesta")
# Acknowledge a message when its task has finished, not when it starts: a worker that dies
# mid-task leaves the message to be delivered again.
CELERY_TASK_ACKS_LATE = True
# Likewise when the pool process running a task is killed (OOM killer, SIGKILL): the message goes
# back on the queue instead of being acknowledged as failed.
CELERY_TASK_REJECT_ON_WORKER_LOST = True
# Each process reserves only the message it runs: a dead worker holds back no other message, and
# an idle process always gets the next one rather than a busy neighbour.
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# A ceiling for every task, so none can hang a process for ever; maintenance tasks may need
# minutes. The batch task has its own, much tighter limits (QUEUE_TASK_TIME_LIMIT below).
CELERY_TASK_SOFT_TIME_LIMIT = 25 * 60
CELERY_TASK_TIME_LIMIT = 30 * 60
# The broker: Redis (the default, REDIS_URL) or RabbitMQ (amqp://). The promises are the same on
# both (docs/RUNBOOK.md, "Broker on RabbitMQ"); the settings that keep them differ.
CELERY_BROKER_IS_AMQP = CELERY_BROKER_URL.startswith(("amqp://", "amqps://", "pyamqp://"))
if CELERY_BROKER_IS_AMQP:
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        # A publish returns once RabbitMQ has the message (publisher confirms): a message the
        # broker refused raises, and the sweeper sends the batch again, rather than being lost
        # without a word after the 202.
        "confirm_publish": True,
    }
    if PROCESS_ROLE != "worker":
        # A RabbitMQ that accepts the connection and then hangs costs a request about a second
        # per try, as with Redis. Not in workers: their consumer waits on the socket by design,
        # and AMQP heartbeats notice a dead broker there.
        CELERY_BROKER_TRANSPORT_OPTIONS |= {"read_timeout": 1, "write_timeout": 1}
        # Sync web workers send no heartbeats between requests: RabbitMQ would close their idle
        # connections, and every first publish after a quiet spell would fail once.
        CELERY_BROKER_HEARTBEAT = 0
    else:
        # A worker notices a broker that died (or a network that dropped its packets) within
        # two heartbeats and reconnects; its unacknowledged message goes back on the queue.
        CELERY_BROKER_HEARTBEAT = 10
    # RabbitMQ has no visibility timeout: an unacknowledged message is delivered again only when
    # the worker's channel closes (worker killed, connection lost), so a long task is never run
    # twice while it runs. Its consumer_timeout (30 minutes by default) closes a channel whose
    # delivery stays unacknowledged longer; it must exceed the longest hard time limit
    # (CELERY_TASK_TIME_LIMIT): the server's rabbitmq.conf sets `consumer_timeout = 3600000`.
else:
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        # Redis gives an unacknowledged message to another worker after this long. It must
        # exceed the longest hard time limit, or a task still running would be started again.
        "visibility_timeout": 2 * CELERY_TASK_TIME_LIMIT,
        # The web process enqueues after its commit; a Redis that cannot be reached costs the
        # request about a second per try, well inside gunicorn's timeout, and the sweeper
        # enqueues the batch later.
        "socket_connect_timeout": 1,
    }
    if PROCESS_ROLE != "worker":
        # Likewise a Redis that accepts the connection and then hangs (a paused or overloaded
        # server). Not in workers: their consumer blocks on Redis by design, and a read timeout
        # there leaves Celery's consumer stuck after the server comes back.
        CELERY_BROKER_TRANSPORT_OPTIONS["socket_timeout"] = 1
CELERY_BROKER_CONNECTION_TIMEOUT = 1
CELERY_TASK_PUBLISH_RETRY_POLICY = {
    "max_retries": 1,
    "interval_start": 0,
    "interval_step": 0.2,
    "interval_max": 0.2,
}
# JSON only: nothing on the broker is ever unpickled, and a message is readable with redis-cli
# or rabbitmqadmin.
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
# Outcomes live in ingest_batches (GET /api/batches/<id>); no result backend is configured.
CELERY_TASK_IGNORE_RESULT = True
# Workers log through LOGGING (one JSON object per line), like the web service.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_WORKER_REDIRECT_STDOUTS = False
# A worker started before its broker waits for it rather than exiting.
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True

# Asynchronous ingestion (metrics/batches/).
QUEUE_MAX_ATTEMPTS = env_int("QUEUE_MAX_ATTEMPTS", 5, minimum=1, maximum=100)
QUEUE_STALE_SECONDS = env_int("QUEUE_STALE_SECONDS", 60, minimum=5, maximum=86400)
# A batch of 1000 points is written in tens of milliseconds; the limits stop a stuck attempt.
QUEUE_TASK_SOFT_TIME_LIMIT = 50
QUEUE_TASK_TIME_LIMIT = 60
# Done batches go with the retention run; the default day is as long as an Idempotency-Key lives.
QUEUE_KEEP_DAYS = env_int("QUEUE_KEEP_DAYS", 1, minimum=1, maximum=3650)
# For tests only, so a test can kill the worker mid-batch.
QUEUE_TEST_DELAY_SECONDS = env_int("QUEUE_TEST_DELAY_SECONDS", 0, minimum=0, maximum=40)
if QUEUE_TEST_DELAY_SECONDS and not DEBUG:
    raise ConfigError("QUEUE_TEST_DELAY_SECONDS is for tests only; it needs DJANGO_DEBUG=true")

# StatsD/DogStatsD over UDP (`manage.py statsd`, protocols/statsd.py).
STATSD_BIND = env_address("STATSD_BIND", "127.0.0.1:8125")
STATSD_FLUSH_SECONDS = env_int("STATSD_FLUSH_SECONDS", 10, minimum=1, maximum=3600)
STATSD_MAX_SERIES_PER_FLUSH = env_int(
    "STATSD_MAX_SERIES_PER_FLUSH", 10_000, minimum=1, maximum=1_000_000
)
STATSD_MAX_SAMPLES_PER_FLUSH = env_int(
    "STATSD_MAX_SAMPLES_PER_FLUSH", 100_000, minimum=1, maximum=10_000_000
)

# Self-monitoring (glowing_fiesta/monitoring/). prometheus_client reads PROMETHEUS_MULTIPROC_DIR
# itself; it is checked here so that a missing directory stops start-up, not the first request.
PROMETHEUS_MULTIPROC_DIR = env_writable_dir("PROMETHEUS_MULTIPROC_DIR")
SELF_METRICS_RECORDING = env_bool("SELF_METRICS_RECORDING", default=True)
if not SELF_METRICS_RECORDING:
    MIDDLEWARE.remove("glowing_fiesta.monitoring.middleware.RequestMetricsMiddleware")
SELF_METRICS = env_bool("SELF_METRICS", default=True) and SELF_METRICS_RECORDING
SELF_METRICS_INTERVAL = env_int("SELF_METRICS_INTERVAL", 10, minimum=1, maximum=3600)

# Alerting and recording rules (docs/ALERTING.md): Prometheus rule files matching RULE_FILES
# (comma-separated globs), each group evaluated every RULE_EVALUATION_INTERVAL seconds unless it
# sets its own interval; alerts sent to every ALERTMANAGER_URLS, firing ones again every
# ALERTING_RESEND_DELAY_SECONDS; at most ALERTING_QUEUE_CAPACITY alerts wait per Alertmanager.
RULE_FILES = env_list("RULE_FILES", "")
RULE_EVALUATION_INTERVAL = env_int("RULE_EVALUATION_INTERVAL", 60, minimum=1, maximum=86400)
# How often beat looks for a group whose next tick has come: the finest interval a group gets.
ALERTING_TICK_SECONDS = env_int("ALERTING_TICK_SECONDS", 5, minimum=1, maximum=3600)
ALERTMANAGER_URLS = env_list("ALERTMANAGER_URLS", "")
for _url in ALERTMANAGER_URLS:
    if not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", _url):
        raise ConfigError(f"ALERTMANAGER_URLS must be http(s) URLs, not {_url!r}")
ALERTMANAGER_TIMEOUT_SECONDS = env_int("ALERTMANAGER_TIMEOUT_SECONDS", 10, minimum=1, maximum=300)
ALERTING_RESEND_DELAY_SECONDS = env_int(
    "ALERTING_RESEND_DELAY_SECONDS", 60, minimum=1, maximum=86400
)
ALERTING_QUEUE_CAPACITY = env_int("ALERTING_QUEUE_CAPACITY", 10_000, minimum=1, maximum=1_000_000)
ALERTING_EXTERNAL_URL = env_str("ALERTING_EXTERNAL_URL", "http://localhost:8000").rstrip("/")
# name=value pairs, comma-separated: added to every alert sent, and `$externalLabels` in templates.
ALERTING_EXTERNAL_LABELS: dict[str, str] = {}
for _item in env_list("ALERTING_EXTERNAL_LABELS", ""):
    _name, _, _value = _item.partition("=")
    ALERTING_EXTERNAL_LABELS[_name.strip()] = _value.strip()
    if not (_name.strip().isidentifier() and _name.isascii() and _value.strip()):
        raise ConfigError(f"ALERTING_EXTERNAL_LABELS must be name=value pairs, not {_name!r}")

LOG_LEVEL = env_choice(
    "LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"), upper=True
)
LOG_FILE = env_file("LOG_FILE")
LOGGING = logging_config(level=LOG_LEVEL, file=LOG_FILE)
