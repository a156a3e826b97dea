# The purges of deleted metrics (metrics/purges.py): a new table, which old code never reads.

import django.contrib.postgres.fields
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("metrics", "0010_refs_gone"),
    ]

    operations = [
        migrations.CreateModel(
            name="MetricPurge",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("metric_id", models.BigIntegerField()),
                ("name", models.CharField(max_length=191)),
                (
                    "series_ids",
                    django.contrib.postgres.fields.ArrayField(
                        base_field=models.BigIntegerField(), size=None
                    ),
                ),
                ("created_at", models.DateTimeField()),
            ],
            options={
                "db_table": "metric_purges",
            },
        ),
    ]
