from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("metrics", "0008_rollup_15m"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="ingestbatch",
            index=models.Index(
                condition=models.Q(("state", "done"), _negated=True),
                fields=["state"],
                name="ingest_batches_unfinished_idx",
            ),
        ),
    ]
