"""The data and measures of `make bench-storage`: the 500 series of bench/_dashboard.py (20
metrics of 25 tag sets) bulk-loaded in SQL over one closed day, sizes of the tables that hold
them, and the codecs a compacted row could use, measured on the same rows."""

from __future__ import annotations

import itertools
import lzma
import struct
import zlib
from collections.abc import Iterator

from bench import _dashboard

# Every table holding points or their rollups, by kind.
KINDS = {
    "raw": ("metric_points",),
    "minute": ("metric_rollup_minute",),
    "compact": ("metric_points_compact",),
    "rollups": ("metric_rollup_15m", "metric_rollup_hour", "metric_rollup_day"),
}


def load(conn, *, start_ms: int, count: int, interval_ms: int) -> int:
    """Metrics, series and points (one copy of the dashboard's shapes, no prefix), then the
    rollups from them as the write path keeps them; returns the points."""
    _dashboard.points_insert(
        conn, prefix="", start_ms=start_ms, count=count, interval_ms=interval_ms
    )
    _dashboard.rollups_build(conn, sums_in_time_order=True)
    return conn.execute("SELECT count(*) FROM metric_points").fetchone()[0]


def sizes(conn) -> dict[str, int]:
    """Bytes on disk (heap, TOAST, indexes) per kind of table, partitions included."""
    out = {}
    for kind, tables in KINDS.items():
        total = 0
        for table in tables:
            total += conn.execute(
                """
                SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint
                FROM pg_class c
                WHERE c.oid = to_regclass(%s)
                   OR c.oid IN (SELECT inhrelid FROM pg_inherits WHERE inhparent = to_regclass(%s))
                """,
                [table, table],
            ).fetchone()[0]
        out[kind] = total
    return out


# --- codecs, on the compacted rows ----------------------------------------------------------


def rows(conn) -> Iterator[tuple[list[int], list[float], str, str]]:
    """Each compacted row's (times in µs from the hour, values, t text, v text)."""
    cursor = conn.execute(
        """
        SELECT c.v, array_agg(d.us ORDER BY d.ord), array_agg(d.value ORDER BY d.ord)
        FROM metric_points_compact c
             CROSS JOIN LATERAL gf_compact_points(c.t, c.v, c.scale, c.points, c.last_us, c.tstep) d
        GROUP BY c.series_id, c.hour, c.v
        """
    )
    for v, times, values in cursor:
        # The delta text of every row, also of those stored as a step without `t`.
        t = ",".join(str(b - a) for a, b in zip([0, *times], times, strict=False))
        yield times, values, t, v


def gorilla_bits(times: list[int], values: list[float]) -> int:
    """Bits of Gorilla's encoding (Pelkonen et al. 2015, as Prometheus's XOR chunks): times as
    delta-of-delta in 1/2/3/4-class codes, values XORed with the one before (leading and
    trailing zeros reused when they fit)."""
    bits = 64 + 64  # the first time and value in full
    previous_delta = None
    for a, b in itertools.pairwise(times):
        delta = b - a
        dod = 0 if previous_delta is None else delta - previous_delta
        previous_delta = delta
        if dod == 0:
            bits += 1
        elif -63 <= dod <= 64:
            bits += 2 + 7
        elif -255 <= dod <= 256:
            bits += 3 + 9
        elif -2047 <= dod <= 2048:
            bits += 4 + 12
        else:
            bits += 4 + 64
    leading = trailing = None
    previous = struct.unpack(">Q", struct.pack(">d", values[0]))[0]
    for value in values[1:]:
        current = struct.unpack(">Q", struct.pack(">d", value))[0]
        xor = previous ^ current
        previous = current
        if xor == 0:
            bits += 1
            continue
        lead = 64 - xor.bit_length()
        trail = (xor & -xor).bit_length() - 1
        lead = min(lead, 31)
        if leading is not None and lead >= leading and trail >= trailing:
            bits += 2 + (64 - leading - trailing)
        else:
            leading, trailing = lead, trail
            bits += 2 + 5 + 6 + (64 - lead - trail)
    return bits


def codec_bytes(conn) -> dict[str, int]:
    """Bytes of every compacted row's points under each candidate codec (payload only: the row
    header, series id and hour are the same for all)."""
    out = dict.fromkeys(
        (
            "float8[] + int8[], lz4 (PostgreSQL)",
            "float8[] + int8[], pglz (PostgreSQL)",
            "delta texts, pglz (PostgreSQL)",
            "delta texts, lz4 (PostgreSQL, chosen)",
            "delta texts, zlib -6",
            "delta texts, xz",
            "Gorilla XOR (bit count)",
        ),
        0,
    )
    # PostgreSQL's own compression of each form, as it would store it: rows copied into
    # temporary tables whose columns compress with that method, from 128-byte rows up.
    out["int8[] deltas + float8[], lz4 (PostgreSQL)"] = 0
    for method in ("lz4", "pglz"):
        conn.execute(
            f"""
            CREATE TEMP TABLE codec_{method} (
                us bigint[] COMPRESSION {method}, ds bigint[] COMPRESSION {method},
                vals float8[] COMPRESSION {method}, t text COMPRESSION {method},
                v text COMPRESSION {method}
            ) WITH (toast_tuple_target = 128)
            """
        )
        conn.execute(
            f"""
            INSERT INTO codec_{method}
            SELECT a.us, a.ds, a.vals, a.t, c.v
            FROM metric_points_compact c CROSS JOIN LATERAL (
                SELECT array_agg(us ORDER BY ord) AS us, array_agg(value ORDER BY ord) AS vals,
                       array_agg(td ORDER BY ord) AS ds, string_agg(td::text, ',' ORDER BY ord) AS t
                FROM (
                    SELECT d.*, d.us - lag(d.us, 1, 0::bigint) OVER (ORDER BY d.ord) AS td
                    FROM gf_compact_points(c.t, c.v, c.scale, c.points, c.last_us, c.tstep) d
                ) x
            ) a
            """
        )
        arrays, deltas, texts = conn.execute(
            f"""
            SELECT sum(pg_column_size(us) + pg_column_size(vals)),
                   sum(pg_column_size(ds) + pg_column_size(vals)),
                   sum(pg_column_size(t) + pg_column_size(v))
            FROM codec_{method}
            """
        ).fetchone()
        out[f"float8[] + int8[], {method} (PostgreSQL)"] = int(arrays)
        if method == "lz4":
            out["int8[] deltas + float8[], lz4 (PostgreSQL)"] = int(deltas)
            out["delta texts, lz4 (PostgreSQL, chosen)"] = int(texts)
        else:
            out["delta texts, pglz (PostgreSQL)"] = int(texts)
    for times, values, t, v in rows(conn):
        payload = (t + ";" + v).encode()
        out["delta texts, zlib -6"] += len(zlib.compress(payload, 6))
        out["delta texts, xz"] += len(lzma.compress(payload, preset=6))
        out["Gorilla XOR (bit count)"] += (gorilla_bits(times, values) + 7) // 8
    return out
