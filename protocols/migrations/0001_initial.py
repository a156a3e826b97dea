from django.db import migrations, models


class Migration(migrations.Migration):
    """Takes over the model of the table `cumulative_streams`, created by metrics 0007: state only."""

    initial = True

    dependencies = [
        ("metrics", "0007_cumulative_streams"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="CumulativeStream",
                    fields=[
                        ("key", models.UUIDField(primary_key=True, serialize=False)),
                        ("name", models.CharField(max_length=191)),
                        ("start_ns", models.BigIntegerField(default=0)),
                        ("last_ns", models.BigIntegerField(null=True)),
                        ("last_value", models.FloatField(null=True)),
                        ("updated_at", models.DateTimeField()),
                    ],
                    options={"db_table": "cumulative_streams"},
                ),
            ],
            database_operations=[],
        ),
    ]
