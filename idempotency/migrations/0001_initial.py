import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    """Takes over the model of the table `idempotency_keys`, created by metrics 0002: state only."""

    initial = True

    dependencies = [
        ("apikeys", "0001_initial"),
        ("metrics", "0002_idempotency_keys"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="IdempotencyRecord",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True,
                                primary_key=True,
                                serialize=False,
                                verbose_name="ID",
                            ),
                        ),
                        ("key", models.CharField(max_length=255)),
                        ("fingerprint", models.CharField(max_length=64)),
                        (
                            "state",
                            models.CharField(
                                choices=[("in_flight", "in flight"), ("done", "done")],
                                default="in_flight",
                                max_length=16,
                            ),
                        ),
                        ("status_code", models.PositiveSmallIntegerField(null=True)),
                        ("response", models.JSONField(null=True)),
                        ("created_at", models.DateTimeField()),
                        ("updated_at", models.DateTimeField()),
                        (
                            "api_key",
                            models.ForeignKey(
                                on_delete=django.db.models.deletion.CASCADE,
                                related_name="+",
                                to="apikeys.apikey",
                            ),
                        ),
                    ],
                    options={
                        "db_table": "idempotency_keys",
                        "indexes": [
                            models.Index(fields=["created_at"], name="idempotency_created_idx")
                        ],
                        "constraints": [
                            models.UniqueConstraint(
                                fields=("api_key", "key"), name="idempotency_key_uniq"
                            )
                        ],
                    },
                ),
            ],
            database_operations=[],
        ),
    ]
