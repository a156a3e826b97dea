from django.db import migrations


class Migration(migrations.Migration):
    """CumulativeStream now belongs to the protocols app; the table stays (state only)."""

    dependencies = [
        ("metrics", "0011_metric_purges"),
        ("protocols", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.DeleteModel(name="CumulativeStream")],
            database_operations=[],
        ),
    ]
