"""Shared helpers for the API-key tests."""

from __future__ import annotations

from apikeys import keyformat


def with_valid_checksum(body: str) -> str:
    """A key-shaped string with a correct checksum for `body` (marker + prefix + secret)."""
    return body + keyformat.checksum(body)


def wrong_secret(raw: str) -> str:
    """Same prefix, different secret, checksum recomputed: passes every check but the hash."""
    body = raw[: -keyformat.CHECKSUM_LENGTH]
    last = body[-1]
    body = body[:-1] + ("a" if last != "a" else "b")
    return with_valid_checksum(body)


def secret_of(raw: str) -> str:
    return keyformat.parse(raw).secret
