"""The API key format: `gf_` + 8-char public prefix + 30-char secret + 6-char checksum.

Modelled on GitHub's tokens. The `gf_` marker makes a leaked key easy to spot (and to scan for in
code), the public prefix is what the database is indexed by and what an operator may quote, and the
CRC32 checksum lets malformed or mistyped keys be refused without a database query. All parts are
base62, so a key survives copy and paste, shells and URLs unchanged.

Only an HMAC-SHA256 of the whole key, keyed with `settings.API_KEY_PEPPER`, is stored: a copy of
the database alone is not enough to forge or to recognise a key.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import string
import zlib
from dataclasses import dataclass

from django.conf import settings

MARKER = "gf_"
ALPHABET = string.digits + string.ascii_uppercase + string.ascii_lowercase
PREFIX_LENGTH = 8
# 30 base62 characters carry 30 * log2(62) ~= 178 bits, above the 160-bit floor.
SECRET_LENGTH = 30
CHECKSUM_LENGTH = 6  # 62**6 > 2**32, so any CRC32 fits
KEY_LENGTH = len(MARKER) + PREFIX_LENGTH + SECRET_LENGTH + CHECKSUM_LENGTH

_SHAPE = re.compile(rf"^{MARKER}[0-9A-Za-z]{{{KEY_LENGTH - len(MARKER)}}}$")


class MalformedKey(ValueError):
    """The string is not a well-formed key (shape or checksum); no lookup is worth doing."""


@dataclass(frozen=True)
class ParsedKey:
    prefix: str
    secret: str


def base62(number: int, width: int) -> str:
    """`number` in base62, left-padded with zeros to `width` characters."""
    digits = []
    while number:
        number, rest = divmod(number, 62)
        digits.append(ALPHABET[rest])
    return "".join(reversed(digits)).rjust(width, ALPHABET[0])


def checksum(body: str) -> str:
    return base62(zlib.crc32(body.encode("ascii")), CHECKSUM_LENGTH)


def _random(length: int) -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(length))


def generate() -> str:
    """A new raw key. Prefix uniqueness is enforced by the database, not here."""
    body = MARKER + _random(PREFIX_LENGTH) + _random(SECRET_LENGTH)
    return body + checksum(body)


def looks_like_key(value: str) -> bool:
    """True for anything shaped like a key, checksum or not (used to spot keys in URLs)."""
    return bool(_SHAPE.match(value))


def parse(raw: str) -> ParsedKey:
    """Split a raw key into its parts, or raise MalformedKey. Pure: touches no storage."""
    if not _SHAPE.match(raw):
        raise MalformedKey("not shaped like a key")
    body, given = raw[:-CHECKSUM_LENGTH], raw[-CHECKSUM_LENGTH:]
    if not hmac.compare_digest(checksum(body), given):
        raise MalformedKey("checksum mismatch")
    start = len(MARKER)
    return ParsedKey(
        prefix=body[start : start + PREFIX_LENGTH], secret=body[start + PREFIX_LENGTH :]
    )


def digest(raw: str) -> str:
    """HMAC-SHA256 of the whole key with the pepper, as 64 hex characters."""
    return hmac.new(
        settings.API_KEY_PEPPER.encode(), raw.encode("ascii"), hashlib.sha256
    ).hexdigest()


def matches(raw: str, key_hash: str) -> bool:
    return hmac.compare_digest(digest(raw), key_hash)
