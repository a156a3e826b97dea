"""Other tools' wire formats (InfluxDB line protocol, StatsD, OTLP, Prometheus remote write)
turned into PointInputs and stored through `metrics.services`."""
