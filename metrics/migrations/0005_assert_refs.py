from django.db import migrations

# Called by every write of points (metrics/storage.py points_write) with the distinct metric and
# series ids it writes: raises GF001 when one of them no longer exists, so a process whose
# cached ids predate a delete in another process writes nothing and retries from the database.
# Two index probes per id, no row locks.
CREATE_SQL = """
CREATE FUNCTION gf_assert_refs(metric_ids bigint[], series_ids bigint[])
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF (SELECT count(*) FROM metrics WHERE id = ANY(metric_ids)) < cardinality(metric_ids)
       OR (SELECT count(*) FROM series WHERE id = ANY(series_ids)) < cardinality(series_ids)
    THEN
        RAISE EXCEPTION 'a metric or series of this write was deleted' USING ERRCODE = 'GF001';
    END IF;
END
$$;
"""

DROP_SQL = "DROP FUNCTION gf_assert_refs(bigint[], bigint[]);"


class Migration(migrations.Migration):
    dependencies = [
        ("metrics", "0004_idempotency_moves_out"),
    ]

    operations = [migrations.RunSQL(CREATE_SQL, DROP_SQL)]
