# Each coarser rollup bucket also keeps its latest point: its value and time. The Prometheus query API
# answers an instant selector (a gauge's latest value within the lookback) and a counter's
# presence from them, so a 30-day panel at one-hour steps reads hour rollups, not raw points.
#
# Nullable, without a default: adding the columns rewrites nothing (a catalog change on the
# partitioned parents, inherited by every partition). Buckets written before this migration
# keep NULL, and queries over them read the raw points instead (promql/selectors.py).
from django.db import migrations, models

# Not the minute rollups: theirs are the many rows, and the query API reads latest points from the
# 15-minute and hour tables (the day table keeps them too, for steps of days).
TABLES = ("metric_rollup_15m", "metric_rollup_hour", "metric_rollup_day")
MODELS = ("rollup15m", "rolluphour", "rollupday")

ADD_SQL = "".join(
    f"ALTER TABLE {table} ADD COLUMN last double precision, ADD COLUMN last_at timestamptz;"
    for table in TABLES
)
DROP_SQL = "".join(
    f"ALTER TABLE {table} DROP COLUMN last, DROP COLUMN last_at;" for table in TABLES
)


class Migration(migrations.Migration):
    dependencies = [
        ("metrics", "0012_cumulative_streams_move_out"),
    ]

    operations = [
        # The models are unmanaged (partitioned tables written by hand): the state follows the SQL.
        *(
            operation
            for model in MODELS
            for operation in (
                migrations.AddField(model, "last", models.FloatField(null=True)),
                migrations.AddField(model, "last_at", models.DateTimeField(null=True)),
            )
        ),
        migrations.RunSQL(ADD_SQL, DROP_SQL),
    ]
