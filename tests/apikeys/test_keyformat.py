import math
import re
import zlib

import pytest
from django.test import override_settings
from hypothesis import given
from hypothesis import strategies as st

from apikeys import keyformat

KEY_RE = re.compile(r"^gf_[0-9A-Za-z]{8}[0-9A-Za-z]{30}[0-9A-Za-z]{6}$")


def test_generated_key_has_marker_prefix_secret_and_checksum():
    raw = keyformat.generate()
    assert KEY_RE.match(raw)
    assert len(raw) == keyformat.KEY_LENGTH == 47
    parsed = keyformat.parse(raw)
    assert raw == "gf_" + parsed.prefix + parsed.secret + raw[-6:]
    assert len(parsed.prefix) == 8


def test_secret_carries_at_least_160_bits():
    assert keyformat.SECRET_LENGTH * math.log2(62) >= 160


def test_keys_are_random():
    keys = {keyformat.generate() for _ in range(200)}
    assert len(keys) == 200
    assert len({keyformat.parse(k).prefix for k in keys}) == 200


def test_checksum_is_crc32_of_everything_before_it_in_base62():
    raw = keyformat.generate()
    body = raw[:-6]
    value = 0
    for char in raw[-6:]:
        value = value * 62 + keyformat.ALPHABET.index(char)
    assert value == zlib.crc32(body.encode())


@pytest.mark.parametrize(
    ("number", "width", "expected"),
    [(0, 6, "000000"), (61, 2, "0z"), (62, 2, "10"), (2**32 - 1, 6, "4gfFC3")],
)
def test_base62_pads_to_width(number, width, expected):
    assert keyformat.base62(number, width) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "gf_",
        "gf_abc",
        "xx_" + "a" * 44,
        "gf_" + "a" * 43,
        "gf_" + "a" * 45,
        "gf_" + "a" * 43 + "!",
        "GF_" + "a" * 44,
        " gf_" + "a" * 44,
    ],
)
def test_malformed_shapes_are_refused(raw):
    with pytest.raises(keyformat.MalformedKey):
        keyformat.parse(raw)


@given(position=st.integers(min_value=3, max_value=46), char=st.sampled_from(keyformat.ALPHABET))
def test_any_single_character_change_fails_the_checksum(position, char):
    raw = "gf_Abc12345" + "s" * 30
    raw += keyformat.checksum(raw)
    changed = raw[:position] + char + raw[position + 1 :]
    if changed == raw:
        return
    with pytest.raises(keyformat.MalformedKey):
        keyformat.parse(changed)


def test_looks_like_key_ignores_the_checksum():
    raw = keyformat.generate()
    broken = raw[:-1] + ("0" if raw[-1] != "0" else "1")
    assert keyformat.looks_like_key(broken)
    assert not keyformat.looks_like_key("gf_requests")


def test_digest_is_keyed_with_the_pepper():
    raw = keyformat.generate()
    with override_settings(API_KEY_PEPPER="one"):
        first = keyformat.digest(raw)
        assert keyformat.matches(raw, first)
    with override_settings(API_KEY_PEPPER="two"):
        assert keyformat.digest(raw) != first
        assert not keyformat.matches(raw, first)
    assert len(first) == 64
