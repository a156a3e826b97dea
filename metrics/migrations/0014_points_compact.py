# Closed days of raw points, compacted (metrics/compaction.py): one row per series and UTC hour
# holding the hour's points as two comma-separated texts and its minute rollups as arrays, every
# column lz4-compressed inside the row (STORAGE MAIN).
#
# - `t`: microseconds, the first from the hour, each next one from the one before; or, when
#   every delta after the first is one step (a regular scrape, a single point), NULL and the
#   step in `tstep`: point o is at last_us - (points - o) * tstep, with no text to parse nor
#   running sum to take (decoding a day took about a quarter less);
# - `v`: with `scale` k, the values times 10^k as integers, each from the one before (gauges and
#   counters written with a few decimals: a delta of 1-4 digits); value = int / 10^k, which the
#   compaction checked gives back the stored float bit for bit. Without `scale`, each value's
#   shortest exact text (float8 output round-trips since PostgreSQL 12);
# - the hour's minute rollups as they were written, one element per minute holding points, in
#   minute order: `mminutes` (minute of the hour; NULL when they are 0, 1, 2, ..., the usual
#   case), `mcounts`, `msums`, `mmins`, `mmaxes`. The write path adds batch sums in arrival
#   order, which a sum over the points cannot reproduce to the bit, so the rollups are kept, not
#   recomputed; the compaction checks their counts, minima and maxima against the points before
#   it drops the minute rollups of the day. Minute buckets (gf_rollup_minute) unnest them and
#   decode no point: bench-storage measured a day's minute max at 1.1-1.2x its raw latency (15x
#   when they were recomputed from the points); all-in 4.34 bytes a point (3.90 before, with
#   the sums alone in TOAST). Figures of docs/PERFORMANCE.md, on a loaded 2-core host.
#
# Texts rather than arrays for the points: an int8[] keeps 8 bytes per delta that lz4 barely
# shrinks; a delta's digits are what carries information. Both decode in SQL
# (gf_compact_points), so percentiles and raw reads stay in the database. In the row rather
# than in TOAST: each column compresses to tens or hundreds of bytes, less than a TOAST row and
# its index entry, and a read costs no TOAST lookup per column. Decoded here, a compacted day's
# points take about 2x their raw time (the texts' parse and the values' running sum, a
# WindowAgg): percentiles decode them in numpy instead (metrics/percentiles.py).
# gf_points and gf_rollup_minute give every reader one source for a range: the raw tables and the
# compacted rows, which never hold the same day (the compaction swaps them in one transaction).
from django.db import migrations

CREATE_SQL = """
CREATE TABLE metric_points_compact (
    series_id bigint NOT NULL,
    hour timestamptz NOT NULL,
    metric_id bigint NOT NULL,
    points integer NOT NULL,
    last_us bigint NOT NULL,
    scale smallint,
    tstep bigint,
    t text,
    v text NOT NULL,
    mminutes smallint[],
    mcounts integer[] NOT NULL,
    msums float8[] NOT NULL,
    mmins float8[] NOT NULL,
    mmaxes float8[] NOT NULL,
    PRIMARY KEY (series_id, hour)
) PARTITION BY RANGE (hour);
-- Compressed in the row itself (MAIN), not moved to the TOAST table: a series-hour's columns
-- compress to tens or hundreds of bytes, less than the TOAST row and index entry each would
-- take, and a read then costs no TOAST index lookup per column. toast_tuple_target = 128 on the
-- day partitions makes PostgreSQL compress them all; only a row past 8 kB moves them out.
ALTER TABLE metric_points_compact ALTER COLUMN t SET STORAGE MAIN,
    ALTER COLUMN v SET STORAGE MAIN, ALTER COLUMN mminutes SET STORAGE MAIN,
    ALTER COLUMN mcounts SET STORAGE MAIN, ALTER COLUMN msums SET STORAGE MAIN,
    ALTER COLUMN mmins SET STORAGE MAIN, ALTER COLUMN mmaxes SET STORAGE MAIN;
-- lz4 where the server is built with it (Debian's and most packages are): it decompresses
-- several times faster than pglz for about the same size (0.22 against 0.26 B/point,
-- docs/PERFORMANCE.md). A server without it (the embedded one of `make run`) keeps pglz, the
-- default, rather than refusing the migration; compaction copies whichever the parent has.
DO $$
BEGIN
    ALTER TABLE metric_points_compact ALTER COLUMN t SET COMPRESSION lz4,
        ALTER COLUMN v SET COMPRESSION lz4, ALTER COLUMN mminutes SET COMPRESSION lz4,
        ALTER COLUMN mcounts SET COMPRESSION lz4, ALTER COLUMN msums SET COMPRESSION lz4,
        ALTER COLUMN mmins SET COMPRESSION lz4, ALTER COLUMN mmaxes SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
    RAISE NOTICE 'this server has no lz4: compacted rows use pglz';
END
$$;
CREATE INDEX metric_points_compact_metric_idx ON metric_points_compact (metric_id, hour);

CREATE TABLE metric_compacted_days (
    day date PRIMARY KEY,
    points bigint NOT NULL,
    rows bigint NOT NULL,
    seconds double precision NOT NULL,
    compacted_at timestamptz NOT NULL
);

-- A running sum of bigints that stays bigint: sum(bigint) is numeric, several times slower.
CREATE AGGREGATE gf_running_sum(bigint) (SFUNC = int8pl, STYPE = bigint);

-- The points of one compacted row: (microseconds from the hour, value, position), in time order.
-- A row with `tstep` (its points `tstep` µs apart) has no `t`: point o is at last_us - (points - o)
-- * tstep, and only the values take a running sum. One branch runs per row (a one-time filter).
CREATE FUNCTION gf_compact_points(t text, v text, scale smallint, points integer,
                                  last_us bigint, tstep bigint)
RETURNS TABLE (us bigint, value double precision, ord bigint)
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT last_us - (points - u.o) * tstep,
           CASE WHEN scale IS NULL THEN u.vt::float8
                ELSE (gf_running_sum(CASE WHEN scale IS NULL THEN 0 ELSE u.vt::bigint END) OVER w)::float8
                     / ('{1,10,100,1000,10000,100000,1000000}'::float8[])[scale + 1]
           END,
           u.o
    FROM unnest(string_to_array(v, ',')) WITH ORDINALITY AS u(vt, o)
    WHERE t IS NULL
    WINDOW w AS (ORDER BY u.o ROWS UNBOUNDED PRECEDING)
    UNION ALL
    SELECT gf_running_sum(u.td::bigint) OVER w,
           CASE WHEN scale IS NULL THEN u.vt::float8
                ELSE (gf_running_sum(CASE WHEN scale IS NULL THEN 0 ELSE u.vt::bigint END) OVER w)::float8
                     / ('{1,10,100,1000,10000,100000,1000000}'::float8[])[scale + 1]
           END,
           u.o
    FROM unnest(string_to_array(t, ','), string_to_array(v, ',')) WITH ORDINALITY AS u(td, vt, o)
    WHERE t IS NOT NULL
    WINDOW w AS (ORDER BY u.o ROWS UNBOUNDED PRECEDING)
$$;

-- Every point of `metrics` recorded in [lo, hi], raw or compacted. `id` orders points of equal
-- time within a series (write order) in both. Inlined by the planner: the day partitions of both
-- tables outside the range are pruned.
CREATE FUNCTION gf_points(metrics bigint[], lo timestamptz, hi timestamptz)
RETURNS TABLE (metric_id bigint, series_id bigint, id bigint, value double precision,
               recorded_at timestamptz, bucket_hour timestamptz)
LANGUAGE sql STABLE AS $$
    SELECT p.metric_id, p.series_id, p.id, p.value, p.recorded_at, p.bucket_hour
    FROM metric_points p
    WHERE p.metric_id = ANY(metrics) AND p.recorded_at >= lo AND p.recorded_at <= hi
    UNION ALL
    SELECT c.metric_id, c.series_id, d.ord, d.value,
           c.hour + d.us * interval '1 microsecond', c.hour
    FROM metric_points_compact c
         CROSS JOIN LATERAL gf_compact_points(c.t, c.v, c.scale, c.points, c.last_us, c.tstep) d
    WHERE c.metric_id = ANY(metrics)
      AND c.hour >= date_trunc('hour', lo AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AND c.hour <= hi
      AND c.hour + d.us * interval '1 microsecond' BETWEEN lo AND hi
$$;

-- The minute rollups of `series` with buckets in [lo, hi), raw or compacted: a compacted
-- hour's minutes are its arrays, unnested (no point is decoded). A NULL `mminutes` stands for
-- the minutes 0, 1, 2, ... (every minute from the hour's first on). Hours wholly in the range
-- skip the per-minute test. The arrays are unnested in the select list, in step (a ProjectSet):
-- unnest(a, b, ...) in FROM would copy every minute into a tuplestore first, 2.5x slower.
CREATE FUNCTION gf_rollup_minute(series bigint[], lo timestamptz, hi timestamptz)
RETURNS TABLE (series_id bigint, bucket timestamptz, count bigint, sum double precision,
               min double precision, max double precision)
LANGUAGE sql STABLE AS $$
    SELECT r.series_id, r.bucket, r.count, r.sum, r.min, r.max
    FROM metric_rollup_minute r
    WHERE r.series_id = ANY(series) AND r.bucket >= lo AND r.bucket < hi
    UNION ALL
    SELECT m.series_id, m.hour + m.minute * interval '1 minute', m.count, m.sum, m.min, m.max
    FROM (
        SELECT c.series_id, c.hour,
               unnest(coalesce(c.mminutes,
                               ('{0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,
                                  24,25,26,27,28,29,30,31,32,33,34,35,36,37,38,39,40,41,42,43,44,
                                  45,46,47,48,49,50,51,52,53,54,55,56,57,58,59}'::smallint[])
                               [1:cardinality(c.mcounts)])) AS minute,
               unnest(c.mcounts)::bigint AS count, unnest(c.msums) AS sum,
               unnest(c.mmins) AS min, unnest(c.mmaxes) AS max
        FROM metric_points_compact c
        WHERE c.series_id = ANY(series)
          AND c.hour >= date_trunc('hour', lo AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AND c.hour < hi
    ) m
    WHERE (m.hour >= lo AND m.hour + interval '1 hour' <= hi)
       OR (m.hour + m.minute * interval '1 minute' >= lo
           AND m.hour + m.minute * interval '1 minute' < hi)
$$;
"""

# Going back would lose every compacted day: refused while one exists (retention removes them,
# or a metric's delete).
DROP_SQL = """
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM metric_points_compact) THEN
        RAISE EXCEPTION 'metric_points_compact holds compacted days: going back would lose them';
    END IF;
END
$$;
DROP FUNCTION gf_rollup_minute(bigint[], timestamptz, timestamptz);
DROP FUNCTION gf_points(bigint[], timestamptz, timestamptz);
DROP FUNCTION gf_compact_points(text, text, smallint, integer, bigint, bigint);
DROP AGGREGATE gf_running_sum(bigint);
DROP TABLE metric_compacted_days;
DROP TABLE metric_points_compact;
"""


class Migration(migrations.Migration):
    dependencies = [
        ("metrics", "0013_rollup_last"),
    ]

    operations = [migrations.RunSQL(CREATE_SQL, DROP_SQL)]
