from django.db import migrations, models

# 15-minute rollups: like the hour and day rollups, one row per (series, UTC bucket), kept
# ROLLUP_RETENTION_DAYS, so hour and day queries in zones whose offset is not a whole hour
# (Asia/Kolkata, Asia/Kathmandu, Pacific/Chatham …) still have data once the minute rollups
# have expired. Not partitioned: a bucket every 15 minutes is 96 rows per series and day.
#
# The table starts from the minute rollups still kept, so recent history reads the same from
# either table. Writes from processes still running the previous code during a rolling
# deploy add to the minute rollups only: restart every process right after migrating.
CREATE_SQL = """
CREATE TABLE metric_rollup_15m (
    series_id bigint NOT NULL,
    bucket timestamptz NOT NULL,
    count bigint NOT NULL,
    sum double precision NOT NULL,
    min double precision NOT NULL,
    max double precision NOT NULL,
    PRIMARY KEY (series_id, bucket)
);
INSERT INTO metric_rollup_15m (series_id, bucket, count, sum, min, max)
SELECT series_id, date_bin('15 minutes', bucket, timestamptz 'epoch'),
       sum(count), sum(sum), min(min), max(max)
FROM metric_rollup_minute
GROUP BY 1, 2;
"""

DROP_SQL = "DROP TABLE metric_rollup_15m;"


class Migration(migrations.Migration):
    dependencies = [
        ("metrics", "0007_cumulative_streams"),
    ]

    operations = [
        migrations.CreateModel(
            name="Rollup15m",
            fields=[
                (
                    "pk",
                    models.CompositePrimaryKey(
                        "series_id",
                        "bucket",
                        blank=True,
                        editable=False,
                        primary_key=True,
                        serialize=False,
                    ),
                ),
                ("bucket", models.DateTimeField()),
                ("count", models.BigIntegerField()),
                ("sum", models.FloatField()),
                ("min", models.FloatField()),
                ("max", models.FloatField()),
            ],
            options={
                "db_table": "metric_rollup_15m",
                "managed": False,
            },
        ),
        migrations.RunSQL(CREATE_SQL, DROP_SQL),
    ]
