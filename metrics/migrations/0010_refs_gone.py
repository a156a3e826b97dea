from django.db import migrations

# Raised from the write statement (metrics/storage.py points_write) only when its inline check
# finds that a metric or series id it writes no longer exists: the check itself is plain SQL in
# the statement, two index probes, so the common case calls no PL/pgSQL at all (gf_assert_refs
# ran a PL/pgSQL function on every write). VOLATILE: the planner never evaluates it early.
# gf_assert_refs stays, for processes still running the previous release during an update.
CREATE_SQL = """
CREATE FUNCTION gf_refs_gone() RETURNS int LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    RAISE EXCEPTION 'a metric or series of this write was deleted' USING ERRCODE = 'GF001';
END
$$;
"""

DROP_SQL = "DROP FUNCTION gf_refs_gone();"


class Migration(migrations.Migration):
    dependencies = [
        ("metrics", "0009_ingest_batches_unfinished_idx"),
    ]

    operations = [migrations.RunSQL(CREATE_SQL, DROP_SQL)]
