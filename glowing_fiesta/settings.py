"""Settings: the one place the application reads its environment.

Every variable is documented in `.env.example`. Bad values stop start-up with a one-line message
naming the variable, so a misconfigured deploy fails loudly before it serves anything.
"""

from __future__ import annotations

import ipaddress
import os
import re
import sys
from datetime import time
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent


class ConfigError(SystemExit):
    """Raised at import time for a bad or missing variable; exits with the message alone."""

    def __init__(self, message: str) -> None:
        super().__init__(f"glowing-fiesta: configuration error: {message}")


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default).strip()


def env_bool(name: str, default: bool = False) -> bool:
    raw = env_str(name)
    if not raw:
        return default
    if raw.lower() in {"1", "true", "yes", "on"}:
        return True
    if raw.lower() in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{name} must be true or false, not {raw!r}")


def env_int(name: str, default: int, *, minimum: int, maximum: int) -> int:
    raw = env_str(name)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer from {minimum} to {maximum}") from None
    if not minimum <= value <= maximum:
        raise ConfigError(f"{name} must be an integer from {minimum} to {maximum}, not {value}")
    return value


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in env_str(name, default).split(",") if item.strip()]


def env_host_port(raw: str) -> tuple[str, int]:
    """HOST:PORT or [IPv6]:PORT as (host, port); ValueError saying what is wrong."""
    host, sep, port = raw.rpartition(":")
    if not sep or not host:
        raise ValueError("no host")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        ipaddress.IPv6Address(host)
    elif ":" in host:
        raise ValueError("an IPv6 address goes in brackets")
    elif not _HOST_RE.fullmatch(host):
        raise ValueError("the host is not an IPv4 address or a host name")
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError("the port must be 1 to 65535")
    return host, int(port)


_HOST_RE = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)


DEBUG = env_bool("DJANGO_DEBUG", default=False)

# Development placeholders are accepted only with DEBUG on; production must set real values.
SECRET_KEY = env_str("DJANGO_SECRET_KEY")
API_KEY_PEPPER = env_str("API_KEY_PEPPER")
for _name, _value in (("DJANGO_SECRET_KEY", SECRET_KEY), ("API_KEY_PEPPER", API_KEY_PEPPER)):
    if not _value and not DEBUG:
        raise ConfigError(f"{_name} must be set when DJANGO_DEBUG is off")
SECRET_KEY = SECRET_KEY or "dev-only-insecure-secret-key"
API_KEY_PEPPER = API_KEY_PEPPER or "dev-only-insecure-pepper"

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "127.0.0.1,localhost,testserver")

DATABASE_URL = env_str("DATABASE_URL")
REDIS_URL = env_str("REDIS_URL")
if not DATABASE_URL:
    raise ConfigError("DATABASE_URL must be set (make run / make test start an embedded one)")
if not REDIS_URL:
    raise ConfigError("REDIS_URL must be set (make run / make test start an embedded one)")

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
    "promql",
    "retention",
    "selfmetrics",
]

MIDDLEWARE = [
    "glowing_fiesta.logging.RequestLogMiddleware",
    "glowing_fiesta.monitoring.middleware.RequestMetricsMiddleware",
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
# A write waiting behind a lock (a long migration, a manual LOCK TABLE) gives up after this and
# is answered 503 with Retry-After, rather than holding its worker for the whole statement
# timeout while requests pile up behind it. Also how long a retry waits for the first request
# with the same Idempotency-Key before it is told 409 "in flight".
DB_LOCK_TIMEOUT_MS = env_int("DB_LOCK_TIMEOUT_MS", 1000, minimum=10, maximum=600000)
DATABASES["default"]["OPTIONS"]["options"] = (
    f"-c statement_timeout={DB_STATEMENT_TIMEOUT_MS} -c lock_timeout={DB_LOCK_TIMEOUT_MS}"
)
# The statements the service sends with server-side parameters (the points-and-rollups write of
# metrics/storage.py) are prepared on each connection after their fifth use, so PostgreSQL parses
# and plans them once per connection instead of once per write: 0.49 -> 0.19 ms of PostgreSQL CPU
# for a single point (docs/PERFORMANCE.md). The ORM's queries bind client-side and are never
# prepared. Off only behind a connection pooler that cannot keep prepared statements (PgBouncer
# in transaction mode before 1.21, or without max_prepared_statements).
DB_PREPARED_STATEMENTS = env_bool("DB_PREPARED_STATEMENTS", default=True)
DATABASES["default"]["OPTIONS"]["prepare_threshold"] = 5 if DB_PREPARED_STATEMENTS else None
# Deleting a metric rewrites every page holding one of its points: far longer than any request
# statement for a big metric, so its transaction gets a limit of its own.
METRIC_DELETE_TIMEOUT_MS = env_int(
    "METRIC_DELETE_TIMEOUT_MS", 120_000, minimum=1000, maximum=3_600_000
)


def _role_from_argv(argv: list[str]) -> str:
    """web, worker, beat or statsd from how the process was started; cli for anything else."""
    # argv[0] is the script: .../bin/gunicorn, or .../gunicorn/__main__.py under `python -m`.
    program = argv[0] if argv else ""
    if "gunicorn" in program or argv[1:2] == ["runserver"]:
        return "web"
    if argv[1:2] == ["statsd"]:
        return "statsd"
    if "celery" in program and "worker" in argv:
        return "worker"
    if "celery" in program and "beat" in argv:
        return "beat"
    return "cli"


# What this process is, for its PostgreSQL application_name (counted by role in /metrics) and
# for whether it writes the service's own figures (web, worker and statsd do). Told apart from the
# command line unless PROCESS_ROLE says otherwise.
PROCESS_ROLE = env_str("PROCESS_ROLE") or _role_from_argv(sys.argv)
if PROCESS_ROLE not in {"web", "worker", "beat", "statsd", "cli"}:
    raise ConfigError(
        f"PROCESS_ROLE must be web, worker, beat, statsd or cli, not {PROCESS_ROLE!r}"
    )
DB_APPLICATION_PREFIX = "glowing-fiesta-"
DATABASES["default"]["OPTIONS"]["application_name"] = DB_APPLICATION_PREFIX + PROCESS_ROLE
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

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
# Only for `manage.py collectstatic` (e.g. to hand the files to a CDN): the service itself
# serves every static file from the apps' own folders (whitenoise, below).
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
# HTTPS by default: browser pages are redirected, API paths over plain HTTP are refused with 403
# (glowing_fiesta.middleware), so a key sent in the clear is not invited to travel again.
# `make run` turns the redirect and secure cookies off for itself (plain HTTP on loopback).
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
# The header a TLS-terminating proxy sets (X-Forwarded-Proto): with it saying https a request
# counts as secure. Unset by default: without such a proxy anyone could claim https.
_proxy_ssl_header = env_str("SECURE_PROXY_SSL_HEADER")
if _proxy_ssl_header:
    if not re.fullmatch(r"[A-Za-z0-9-]+", _proxy_ssl_header):
        raise ConfigError(
            f"SECURE_PROXY_SSL_HEADER must be a header name such as X-Forwarded-Proto, "
            f"not {_proxy_ssl_header!r}"
        )
    SECURE_PROXY_SSL_HEADER = (
        "HTTP_" + _proxy_ssl_header.upper().replace("-", "_"),
        "https",
    )
# One year once HTTPS is on; 0 (no header) when it is off, as under `make run`.
SECURE_HSTS_SECONDS = env_int(
    "SECURE_HSTS_SECONDS",
    365 * 24 * 3600 if SECURE_SSL_REDIRECT else 0,
    minimum=0,
    maximum=2 * 365 * 24 * 3600,
)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
# Preloading commits a whole domain to HTTPS in every browser; only its owner can decide that,
# so it is off unless asked for, and Django's reminder about it is silenced.
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", default=False)
SILENCED_SYSTEM_CHECKS = ["security.W021"]
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", default=True)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", default=True)
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
# https origins allowed to post the admin's forms (e.g. https://metrics.example.com), needed
# when a proxy changes the Host the browser used.
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
# Off unless origins are listed: e.g. https://app.example.com,https://admin.example.com.
CORS_ALLOWED_ORIGINS = env_list("CORS_ALLOWED_ORIGINS", "")
for _origin in CORS_ALLOWED_ORIGINS:
    if not re.fullmatch(r"https?://[A-Za-z0-9.-]+(:\d{1,5})?", _origin):
        raise ConfigError(
            f"CORS_ALLOWED_ORIGINS must list origins such as https://app.example.com, "
            f"not {_origin!r}"
        )
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
# Failed authentications (wrong API keys, failed admin logins) per client address; past this the
# address gets 429 for the rest of the window, before any key is looked up. N/s, N/m, N/h, N/d
# (or second, minute, hour, day).
_auth_failure_rate = env_str("AUTH_FAILURE_RATE", "100/minute")
_rate_match = re.fullmatch(
    r"([1-9]\d{0,6})/(s|m|h|d|sec|second|min|minute|hour|day)", _auth_failure_rate
)
if not _rate_match:
    raise ConfigError(
        f"AUTH_FAILURE_RATE must be COUNT/PERIOD such as 100/minute (period s, m, h or d), "
        f"not {_auth_failure_rate!r}"
    )
AUTH_FAILURE_RATE = f"{_rate_match[1]}/{_rate_match[2][0]}"
# Proxies in front of the service that append to X-Forwarded-For. 0: the client is REMOTE_ADDR;
# n: the n-th address from the right of X-Forwarded-For (the right-most one no proxy of ours
# wrote). Anything a client writes to the left of that is ignored.
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
# InfluxDB line protocol (/api/v2/write, /write): the largest body, in bytes, after gunzipping;
# past it the answer is 413 (also the most a gzip bomb can make a request hold in memory).
INFLUX_MAX_BODY_BYTES = env_int(
    "INFLUX_MAX_BODY_BYTES", 32 * 1024 * 1024, minimum=1024, maximum=1024 * 1024 * 1024
)
# Queries: percentiles scan raw points and are cut off after this long (503 + Retry-After);
# any query slower than QUERY_SLOW_MS is logged as a warning with its duration.
QUERY_PERCENTILE_TIMEOUT_MS = env_int(
    "QUERY_PERCENTILE_TIMEOUT_MS", 3000, minimum=1, maximum=600000
)
QUERY_SLOW_MS = env_int("QUERY_SLOW_MS", 250, minimum=0, maximum=600000)
# OTLP/HTTP (POST /v1/metrics) and Prometheus remote write (POST /api/v1/write): the largest
# body accepted, in bytes, after decompression (and before it). Larger is a 413; a compressed body
# is inflated in steps and abandoned once past the cap, so it never takes more memory than this.
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

# Retention: raw points and minute rollups; hour and day rollups are kept longer.
RETENTION_DAYS = env_int("RETENTION_DAYS", 90, minimum=1, maximum=3650)
ROLLUP_RETENTION_DAYS = env_int("ROLLUP_RETENTION_DAYS", 730, minimum=1, maximum=3650)
if ROLLUP_RETENTION_DAYS < RETENTION_DAYS:
    raise ConfigError(
        f"ROLLUP_RETENTION_DAYS ({ROLLUP_RETENTION_DAYS}) must be at least "
        f"RETENTION_DAYS ({RETENTION_DAYS})"
    )
# Strictly HH:MM: fromisoformat alone would also take seconds or a UTC offset, which the daily
# schedule (hour and minute, in UTC) would silently ignore.
_run_at = env_str("RETENTION_RUN_AT", "03:30")
try:
    if len(_run_at) != 5 or _run_at[2] != ":":
        raise ValueError(_run_at)
    RETENTION_RUN_AT = time.fromisoformat(_run_at)
except ValueError:
    raise ConfigError(f"RETENTION_RUN_AT must be HH:MM (UTC), not {_run_at!r}") from None

# Celery. The broker carries batch ids only: the ingest_batches table in PostgreSQL is the record
# of work, and every task is safe to run twice. So each setting below prefers running a task
# again to losing it (docs/DEPLOYMENT.md, "Queue").
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL") or REDIS_URL
# One queue name per installation (or test run): two of them sharing a Redis never take each
# other's tasks.
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
CELERY_BROKER_TRANSPORT_OPTIONS = {
    # Redis gives an unacknowledged message to another worker after this long. It must exceed the
    # longest hard time limit, or a task still running would be started a second time.
    "visibility_timeout": 2 * CELERY_TASK_TIME_LIMIT,
    # The web process enqueues after its commit; a Redis that cannot be reached costs the
    # request about a second per try, well inside gunicorn's timeout, and the sweeper enqueues
    # the batch later.
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
# JSON only: nothing on the broker is ever unpickled, and a message is readable with redis-cli.
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
# Outcomes live in ingest_batches (GET /api/batches/<id>); no result backend is configured.
CELERY_TASK_IGNORE_RESULT = True
# Workers log through LOGGING below (one JSON object per line), like the web service.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_WORKER_REDIRECT_STDOUTS = False
# A worker started before Redis waits for it rather than exiting.
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True

# Asynchronous ingestion (metrics/batches.py). A batch is given up after QUEUE_MAX_ATTEMPTS claims;
# a pending batch not picked up after QUEUE_STALE_SECONDS is sent to the broker again.
QUEUE_MAX_ATTEMPTS = env_int("QUEUE_MAX_ATTEMPTS", 5, minimum=1, maximum=100)
QUEUE_STALE_SECONDS = env_int("QUEUE_STALE_SECONDS", 60, minimum=5, maximum=86400)
# A batch of 1000 points is written in tens of milliseconds; the limits stop a stuck attempt.
QUEUE_TASK_SOFT_TIME_LIMIT = 50
QUEUE_TASK_TIME_LIMIT = 60
# Done batches (and their payloads) are deleted after this many days by the retention run
# (default: a day, as long as an Idempotency-Key is remembered); failed ones are kept.
QUEUE_KEEP_DAYS = env_int("QUEUE_KEEP_DAYS", 1, minimum=1, maximum=3650)
# For tests only: the first attempt at a batch sleeps this long before it commits, so a test can
# kill the worker mid-batch. Refused outside DEBUG.
QUEUE_TEST_DELAY_SECONDS = env_int("QUEUE_TEST_DELAY_SECONDS", 0, minimum=0, maximum=40)
if QUEUE_TEST_DELAY_SECONDS and not DEBUG:
    raise ConfigError("QUEUE_TEST_DELAY_SECONDS is for tests only; it needs DJANGO_DEBUG=true")

# StatsD/DogStatsD over UDP (`manage.py statsd`, metrics/protocols/statsd.py).
_statsd_bind = env_str("STATSD_BIND", "127.0.0.1:8125")
try:
    STATSD_BIND = env_host_port(_statsd_bind)
except ValueError as exc:
    raise ConfigError(
        f"STATSD_BIND must be HOST:PORT or [IPv6]:PORT, not {_statsd_bind!r}: {exc}"
    ) from None
STATSD_FLUSH_SECONDS = env_int("STATSD_FLUSH_SECONDS", 10, minimum=1, maximum=3600)
# Per flush interval: distinct series (type, name, tag set) held, and timer samples plus set
# members held; what comes past either is dropped, counted and logged with the flush.
STATSD_MAX_SERIES_PER_FLUSH = env_int(
    "STATSD_MAX_SERIES_PER_FLUSH", 10_000, minimum=1, maximum=1_000_000
)
STATSD_MAX_SAMPLES_PER_FLUSH = env_int(
    "STATSD_MAX_SAMPLES_PER_FLUSH", 100_000, minimum=1, maximum=10_000_000
)

# Self-monitoring (glowing_fiesta/monitoring/). prometheus_client reads PROMETHEUS_MULTIPROC_DIR
# itself; it is checked here so that a missing directory stops start-up instead of failing the
# first request. With it, GET /metrics sums every process that shares the directory (gunicorn
# workers, Celery pool processes); without it, each process shows only its own figures.
PROMETHEUS_MULTIPROC_DIR = env_str("PROMETHEUS_MULTIPROC_DIR")
if PROMETHEUS_MULTIPROC_DIR and not (
    os.path.isdir(PROMETHEUS_MULTIPROC_DIR) and os.access(PROMETHEUS_MULTIPROC_DIR, os.W_OK)
):
    raise ConfigError(
        f"PROMETHEUS_MULTIPROC_DIR must be a writable directory, not {PROMETHEUS_MULTIPROC_DIR!r}"
    )
# Off: the recording helpers do nothing (the /metrics endpoint then shows only the gauges read
# when it is scraped). For measuring the cost of the recording itself.
SELF_METRICS_RECORDING = env_bool("SELF_METRICS_RECORDING", default=True)
if not SELF_METRICS_RECORDING:
    MIDDLEWARE.remove("glowing_fiesta.monitoring.middleware.RequestMetricsMiddleware")
# The service's own figures written to its own store as glowing_fiesta.* metrics, every
# SELF_METRICS_INTERVAL seconds, by the web, worker and statsd processes.
SELF_METRICS = env_bool("SELF_METRICS", default=True) and SELF_METRICS_RECORDING
SELF_METRICS_INTERVAL = env_int("SELF_METRICS_INTERVAL", 10, minimum=1, maximum=3600)

LOG_LEVEL = env_str("LOG_LEVEL", "INFO").upper()
if LOG_LEVEL not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
    raise ConfigError(
        f"LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL, not {LOG_LEVEL!r}"
    )
# Also write the same JSON lines to this file (reopened when logrotate moves it away).
LOG_FILE = env_str("LOG_FILE")
if LOG_FILE and not os.path.isdir(os.path.dirname(os.path.abspath(LOG_FILE))):
    raise ConfigError(f"LOG_FILE must be in an existing directory, not {LOG_FILE!r}")
_log_handlers = {
    "stdout": {
        "class": "logging.StreamHandler",
        "stream": "ext://sys.stdout",
        "formatter": "json",
        "filters": ["request"],
    }
}
if LOG_FILE:
    # WatchedFileHandler notices that logrotate renamed the file and opens a new one, so no
    # signal or copytruncate is needed (deploy/logrotate/glowing-fiesta).
    _log_handlers["file"] = {
        "class": "logging.handlers.WatchedFileHandler",
        "filename": LOG_FILE,
        "formatter": "json",
        "filters": ["request"],
    }
# Libraries that log at INFO per connection or per message; their warnings still show.
_CHATTY_LOGGERS = (
    "amqp",
    "asyncio",
    "celery.app.trace",
    "celery.worker.strategy",
    "django.db.backends",
    "kombu",
    "psycopg",
    "redis",
    "urllib3",
)
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request": {"()": "glowing_fiesta.logging.RequestContextFilter"}},
    "formatters": {"json": {"()": "glowing_fiesta.logging.JsonFormatter"}},
    "handlers": _log_handlers,
    "root": {"handlers": list(_log_handlers), "level": LOG_LEVEL},
    "loggers": {
        # Our own access log replaces Django's, which would log the query string.
        "django.server": {"handlers": [], "propagate": False},
        "django.request": {"level": "ERROR"},
        **{name: {"level": "WARNING"} for name in _CHATTY_LOGGERS},
    },
}
