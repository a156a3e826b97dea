"""histogram_quantile over many steps at once answers what Prometheus's bucketQuantile, step by
step, answers: bit for bit, over buckets with repeated bounds, NaN counts, counts that fall,
empty histograms, no +Inf bucket, and φ outside [0, 1]."""

from __future__ import annotations

import numpy as np

from promql.functions import bucket_quantile, bucket_quantiles, histogram_quantile
from promql.values import Vector


def test_many_steps_at_once_equal_each_step_alone():
    rng = np.random.default_rng(3)
    steps = 30
    for _ in range(2000):
        size = int(rng.integers(0, 7))
        bounds = np.sort(rng.choice([-1.0, 0.0, 0.05, 0.1, 0.1, 0.25, 1.0, np.inf], size=size))
        if size and rng.random() < 0.8:
            bounds[-1] = np.inf
        counts = np.cumsum(rng.integers(0, 5, size=(size, steps)).astype(float), axis=0)
        if size and rng.random() < 0.3:
            counts[int(rng.integers(0, size))] = np.nan
        if rng.random() < 0.2:
            counts = counts[::-1].copy()  # falling counts: forced monotonic
        if rng.random() < 0.1:
            counts[:] = 0
        phis = rng.choice([0.0, 0.5, 0.95, 1.0, -0.1, 1.5, np.nan, 1 / 3], size=steps)
        with np.errstate(all="ignore"):
            one = [bucket_quantile(float(phis[m]), bounds, counts[:, m]) for m in range(steps)]
        assert np.array_equal(bucket_quantiles(phis, bounds, counts), one, equal_nan=True)


def test_a_step_missing_a_bucket_is_answered_from_the_buckets_it_has():
    labels = [(("le", le),) for le in ("0.1", "1", "+Inf")]
    values = np.array([[1.0, 1.0, 1.0], [3.0, 3.0, 3.0], [4.0, 4.0, 4.0]])
    present = np.ones((3, 3), dtype=bool)
    present[1, 1] = False  # the `le="1"` bucket is missing at the second step
    out = histogram_quantile(np.full(3, 0.5), Vector(labels, values, present))
    expected = [
        bucket_quantile(0.5, np.array([0.1, 1, np.inf]), values[:, 0]),
        bucket_quantile(0.5, np.array([0.1, np.inf]), values[[0, 2], 1]),
        bucket_quantile(0.5, np.array([0.1, 1, np.inf]), values[:, 2]),
    ]
    assert out.values[0].tolist() == expected
    assert expected[0] != expected[1]
