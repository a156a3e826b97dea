from django.apps import AppConfig


class AlertingConfig(AppConfig):
    """Prometheus rule files evaluated by the service: recording rules written to the store,
    alerts kept in PostgreSQL and sent to Alertmanager."""

    name = "alerting"
    label = "alerting"
    verbose_name = "Alerting and recording rules"
