from django.apps import AppConfig


class PromqlConfig(AppConfig):
    name = "promql"
    label = "promql"
    verbose_name = "Prometheus query API"
