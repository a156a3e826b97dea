"""API-key authentication for DRF.

The key is read from the `X-API-Key` header, or from `Authorization: Bearer <key>` (what
Prometheus scrape configs and OpenTelemetry exporters send) or `Authorization: Token <key>` (what
InfluxDB clients and Telegraf send). Keys in URLs are refused outright: URLs end up in proxy
logs, browser history and Referer headers, so such a key must be treated as leaked.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import logging

from django.utils import timezone
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication
from rest_framework.request import Request

from glowing_fiesta import monitoring
from glowing_fiesta.bruteforce import auth_failure_record, auth_failures_check
from glowing_fiesta.logging import api_key_prefix_var

from . import keyformat
from .models import ApiKey
from .selectors import KeyRejected, apikey_get_active, apikey_held
from .services import apikey_mark_used

logger = logging.getLogger(__name__)

HEADER = "X-API-Key"
# Set on a request whose address's failed authentications are yet to be read (see authenticate),
# to the time its key is then marked used at.
AUTH_FAILURES_UNCHECKED = "auth_failures_unchecked"
_META_HEADER = "HTTP_X_API_KEY"
# Authorization schemes that carry the raw key, compared case-insensitively (RFC 9110 11.1).
_AUTHORIZATION_SCHEMES = frozenset({"bearer", "token"})
# Query parameters that clients commonly use for keys; any value shaped like a key is refused too.
_URL_KEY_PARAMS = frozenset({"api_key", "apikey", "api-key", "x-api-key", "key"})


class ApiKeyMissing(exceptions.NotAuthenticated):
    default_detail = (
        "The API key is missing: send it in the X-API-Key header "
        "(or as Authorization: Bearer <key>)."
    )
    default_code = "api_key_missing"


class ApiKeyInvalid(exceptions.AuthenticationFailed):
    default_detail = "The API key is invalid."
    default_code = "api_key_invalid"


class ApiKeyRevoked(exceptions.AuthenticationFailed):
    default_detail = "The API key has been revoked."
    default_code = "api_key_revoked"


class ApiKeyExpired(exceptions.AuthenticationFailed):
    default_detail = "The API key has expired."
    default_code = "api_key_expired"


class ApiKeyInUrl(exceptions.AuthenticationFailed):
    default_detail = (
        "API keys are refused in the URL, where they end up in logs: send the key in the "
        "X-API-Key header, and consider revoking a key that has been sent this way."
    )
    default_code = "api_key_in_url"


_REJECTIONS: dict[str, type[exceptions.AuthenticationFailed]] = {
    "invalid": ApiKeyInvalid,
    "revoked": ApiKeyRevoked,
    "expired": ApiKeyExpired,
}


def raw_key_from(request: Request) -> str:
    """The key the request carries: X-API-Key first, else a Bearer or Token Authorization, else
    the password of a Basic one (what Grafana's "Basic auth" and `promtool` with
    `http://user:KEY@host` send; the user name is ignored)."""
    raw = request.META.get(_META_HEADER, "").strip()
    if raw:
        return raw
    scheme, _, credentials = request.META.get("HTTP_AUTHORIZATION", "").strip().partition(" ")
    scheme = scheme.lower()
    if scheme in _AUTHORIZATION_SCHEMES:
        return credentials.strip()
    if scheme == "basic":
        try:
            decoded = base64.b64decode(credentials.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return ""  # not "user:password" in base64: no key sent
        return decoded.partition(":")[2].strip()
    return ""


def _key_in_url(request: Request) -> bool:
    params = request.query_params
    if any(name.lower() in _URL_KEY_PARAMS for name in params):
        return True
    return any(keyformat.looks_like_key(value) for value in params.values())


class ApiKeyAuthentication(BaseAuthentication):
    """Authenticate a request by its key (`raw_key_from`); the ApiKey becomes user and auth.

    Returns None when no key is sent, so views that allow anonymous access keep working;
    views that need a key refuse with 401 "missing" from their permission check. A key that
    is malformed or has a bad checksum is refused without a database query; otherwise the cost
    is at most one indexed lookup by prefix (none while the row is cached in Redis), plus an
    UPDATE of last_used_at at most once a minute per key.

    Every rejected key counts against the client's address; an address past AUTH_FAILURE_RATE
    gets 429 before its key is even parsed (glowing_fiesta.bruteforce).
    """

    def authenticate(self, request: Request) -> tuple[ApiKey, ApiKey] | None:
        if _key_in_url(request):
            logger.warning("api key refused in url", extra={"path": request.path})
            monitoring.auth_failure("in_url")
            raise ApiKeyInUrl()
        raw = raw_key_from(request)
        if not raw:
            return None
        prefix = None
        with contextlib.suppress(keyformat.MalformedKey):
            prefix = keyformat.parse(raw).prefix
            api_key_prefix_var.set(prefix)  # public; the key never is
        # The failures check guards the database. When this process holds the prefix's row the
        # lookup costs no query, and the check can wait for the rate limit's round trip, where
        # one script reads the failures and counts the request (ApiKeyView.check_permissions).
        # Only for views that do read them there (ApiKeyView); any other keyed view checks here.
        view = (request.parser_context or {}).get("view")
        deferred = (
            getattr(view, "reads_auth_failures", False)
            and prefix is not None
            and apikey_held(prefix=prefix)
        )
        if not deferred:
            auth_failures_check(request)
        now = timezone.now()
        try:
            key = apikey_get_active(raw_key=raw, now=now)
        except KeyRejected as rejected:
            if deferred:
                auth_failures_check(request)  # an address over the limit learns nothing more
            logger.info("api key rejected", extra={"reason": rejected.reason})
            auth_failure_record(request)
            monitoring.auth_failure(rejected.reason)
            raise _REJECTIONS[rejected.reason]() from None
        if deferred:
            # Marked used by the view once the failures are read: a refused request is no use.
            setattr(request, AUTH_FAILURES_UNCHECKED, now)
        else:
            apikey_mark_used(key=key, now=now)
        return key, key

    def authenticate_header(self, request: Request) -> str:
        # Without a challenge DRF would turn every 401 into a 403.
        return f'ApiKey header="{HEADER}"'
