"""metrics.percentiles against PostgreSQL itself: the decoding against gf_compact_points and the
ranking against percentile_cont, to the bit, on values chosen to be awkward."""

import itertools
import random

import numpy as np
import pytest
from django.db import connection

from metrics import percentiles

pytestmark = pytest.mark.django_db


def _awkward(rng: random.Random) -> float:
    kind = rng.random()
    if kind < 0.3:
        return round(rng.uniform(-1000, 1000), rng.randrange(7))
    if kind < 0.5:
        return rng.random() * 10 ** rng.randrange(-8, 300)
    if kind < 0.6:
        return float(rng.randrange(-(10**15), 10**15))
    if kind < 0.7:
        return rng.choice((0.0, -0.0, 1.0, 0.1, 1e-300, 5e-324))
    return rng.uniform(-1, 1)


def test_percentile_cont_is_postgresqls_to_the_bit():
    rng = random.Random(11)
    codes, buckets, values = [], [], []
    for group in range(40):
        size = rng.choice((1, 2, 3, 7, 20, 101, 500))
        for _ in range(size):
            codes.append(group % 3)
            buckets.append(group)
            # Ties too: some groups draw from a handful of values.
            values.append(_awkward(rng) if group % 4 else float(rng.randrange(3)))
    for fraction in (0.5, 0.9, 0.95, 0.99):
        ours = percentiles.percentile_cont(
            np.array(codes), np.array(buckets), np.array(values), fraction
        )
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT c, b, percentile_cont(%s) WITHIN GROUP (ORDER BY v)"
                " FROM unnest(%s::int[], %s::int[], %s::float8[]) AS x(c, b, v)"
                " GROUP BY c, b ORDER BY c, b",
                [fraction, codes, buckets, values],
            )
            theirs = cursor.fetchall()
        assert [(c, b, v.hex()) for c, b, v in ours] == [(c, b, v.hex()) for c, b, v in theirs]


def _row(rng: random.Random, *, stepped: bool, scale: int | None) -> tuple:
    """A compacted row as the compaction writes it (migration 0014's form)."""
    count = rng.choice((1, 2, 5, 360))
    if scale is None:
        values = [repr(_awkward(rng)) for _ in range(count)]
    else:
        ints = [rng.randrange(-(10**14), 10**14) if rng.random() < 0.1 else rng.randrange(-99, 99)]
        for _ in range(count - 1):
            ints.append(ints[-1] + rng.randrange(-5000, 5000))
        values = [str(ints[0])] + [str(b - a) for a, b in itertools.pairwise(ints)]
    if stepped:
        step = rng.choice((1, 10_000_000, 15_250_017))
        last = rng.randrange(count * step, 3_600_000_000) if count * step < 3_600_000_000 else 0
        return last, step, scale, None, ",".join(values), count
    times = sorted(rng.randrange(3_600_000_000) for _ in range(count))
    deltas = [times[0]] + [b - a for a, b in itertools.pairwise(times)]
    return times[-1], None, scale, ",".join(map(str, deltas)), ",".join(values), count


def test_compact_decode_gives_what_gf_compact_points_gives():
    rng = random.Random(5)
    rows = [
        _row(rng, stepped=stepped, scale=scale)
        for _ in range(6)
        for stepped in (True, False)
        for scale in (None, 0, 2, 6)
    ]
    hour_us = 1_700_000_000 * 1_000_000 // 3_600_000_000 * 3_600_000_000
    codes, at, values = percentiles.compact_decode(
        [(n % 4, hour_us, count, last, step, scale, t, v)
         for n, (last, step, scale, t, v, count) in enumerate(rows)]
    )  # fmt: skip
    expected = []
    with connection.cursor() as cursor:
        for n, (last, step, scale, t, v, count) in enumerate(rows):
            cursor.execute(
                "SELECT us, value FROM gf_compact_points(%s, %s, %s::smallint, %s, %s, %s)"
                " ORDER BY ord",
                [t, v, scale, count, last, step],
            )
            expected += [(n % 4, hour_us + us, value.hex()) for us, value in cursor.fetchall()]
    assert list(
        zip(codes.tolist(), at.tolist(), [x.hex() for x in values.tolist()], strict=True)
    ) == (expected)
