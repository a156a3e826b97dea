from django.apps import AppConfig


class ApikeysConfig(AppConfig):
    name = "apikeys"
    verbose_name = "API keys"

    def ready(self) -> None:
        # Registers the OpenAPI extension for the X-API-Key scheme with drf-spectacular.
        from . import schema  # noqa: F401
