from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("idempotency", "0001_initial"),
    ]

    operations = [
        migrations.AddField(
            model_name="idempotencyrecord",
            name="headers",
            field=models.JSONField(default=dict),
        ),
    ]
