from django.db import migrations


class Migration(migrations.Migration):
    """IdempotencyRecord now belongs to the idempotency app; the table stays (state only)."""

    dependencies = [
        ("metrics", "0003_ingest_batches"),
        ("idempotency", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.DeleteModel(name="IdempotencyRecord")],
            database_operations=[],
        ),
    ]
