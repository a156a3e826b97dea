"""Sample values as Prometheus writes them (Go's strconv.FormatFloat(v, 'f', -1, 64)): the
shortest digits that read back to the same float, never an exponent."""

from __future__ import annotations

import numpy as np

from promql.render import number_text, range_result
from promql.values import Vector

# (value, Go's text): whole numbers, fractions, both sides of the magnitudes where Python's repr
# turns to exponents (1e-4, 1e16), subnormals, the largest float, signed zero, NaN, infinities.
GO_TEXTS = [
    (0.0, "0"),
    (-0.0, "0"),
    (1.0, "1"),
    (-3.0, "-3"),
    (0.5, "0.5"),
    (0.1 + 0.2, "0.30000000000000004"),
    (1e-4, "0.0001"),
    (9.9e-5, "0.000099"),
    (-2.5e-7, "-0.00000025"),
    (5e-324, "0." + "0" * 323 + "5"),
    (123456789012345.5, "123456789012345.5"),
    (1e15, "1000000000000000"),
    (1e15 + 2, "1000000000000002"),
    (2.0**53, "9007199254740992"),
    (1.5e16, "15000000000000000"),
    (1.7976931348623157e308, "17976931348623157" + "0" * 292),
    (float("nan"), "NaN"),
    (float("inf"), "+Inf"),
    (float("-inf"), "-Inf"),
]


def test_a_panel_writes_every_value_as_go_does():
    values = np.array([value for value, _ in GO_TEXTS])
    times = np.arange(len(values), dtype=np.int64) * 15_000
    vector = Vector([(("job", "a"),)], values[None, :], np.ones((1, len(values)), dtype=bool))
    (series,) = range_result(vector, times)["result"]
    assert [text for _, text in series["values"]] == [text for _, text in GO_TEXTS]
    assert [number_text(value) for value, _ in GO_TEXTS] == [text for _, text in GO_TEXTS]


def test_random_values_read_back_to_the_same_floats():
    rng = np.random.default_rng(7)
    values = rng.normal(size=5000) * 10.0 ** rng.integers(-9, 20, size=5000)
    values[::7] = np.round(values[::7])
    vector = Vector([()], values[None, :], np.ones((1, len(values)), dtype=bool))
    (series,) = range_result(vector, np.arange(len(values), dtype=np.int64))["result"]
    texts = [text for _, text in series["values"]]
    assert [float(text) for text in texts] == values.tolist()
    assert not any("e" in text for text in texts)
    assert texts == [number_text(value) for value in values.tolist()]
