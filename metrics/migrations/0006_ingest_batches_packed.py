from django.db import migrations, models


class Migration(migrations.Migration):
    """Batches are stored packed (bytea). Rows queued before keep their JSON payload and are
    still read. Reversing refuses to run while a packed batch is unfinished (it would be lost),
    and deletes the packed batches that are done or failed: the old code cannot read them."""

    dependencies = [
        ("metrics", "0005_assert_refs"),
    ]

    operations = [
        migrations.AddField(
            model_name="ingestbatch",
            name="packed",
            field=models.BinaryField(null=True),
        ),
        migrations.AlterField(
            model_name="ingestbatch",
            name="payload",
            field=models.JSONField(null=True),
        ),
        # Last, so that going back it runs first: before payload is NOT NULL again.
        migrations.RunSQL(
            migrations.RunSQL.noop,
            """
            DO $$ BEGIN
                IF EXISTS (SELECT 1 FROM ingest_batches
                           WHERE payload IS NULL AND state IN ('pending', 'running')) THEN
                    RAISE EXCEPTION 'unfinished packed batches: drain the queue first';
                END IF;
            END $$;
            DELETE FROM ingest_batches WHERE payload IS NULL;
            """,
        ),
    ]
