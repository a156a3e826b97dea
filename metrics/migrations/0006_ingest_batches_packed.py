from django.db import migrations, models


class Migration(migrations.Migration):
    """Batches are stored packed (bytea). Rows queued before keep their JSON payload and are
    still read; reversing refuses to run while a packed batch is unfinished (it would be lost)."""

    dependencies = [
        ("metrics", "0005_assert_refs"),
    ]

    operations = [
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
    ]
