from django.apps import AppConfig

from glowing_fiesta.monitoring import sink


class SelfmetricsConfig(AppConfig):
    """The service's own figures where they need the apps: stored as glowing_fiesta.* metrics,
    read from PostgreSQL and the broker at scrape time, served on GET /metrics."""

    name = "selfmetrics"
    label = "selfmetrics"

    def ready(self) -> None:
        # Imported here, not with this module: the store writes through metrics.services, whose
        # models can be imported only once the app registry is ready.
        from .selfstore import store_for_process

        # The recording facade imports no app: the store is handed to it as its sink.
        sink.sink_register(store_for_process)
