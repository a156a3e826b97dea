from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from apikeys.models import ApiKey
from apikeys.services import apikey_create

DEMO_NAME = "demo"


class Command(BaseCommand):
    help = "Create a 'demo' API key if there is no key at all, and print it once (make run)."

    def handle(self, *args: Any, **options: Any) -> None:
        if ApiKey.objects.exists():
            self.stdout.write(
                "An API key already exists (keys are shown only when created); "
                "create another with: make api-key NAME=... (python manage.py create_api_key NAME)"
            )
            return
        key, raw = apikey_create(name=DEMO_NAME)
        self.stdout.write(f"Created API key {key.pk} {DEMO_NAME!r}, shown only this once:")
        self.stdout.write(raw)
        self.stdout.write(
            f"Try: curl -X POST -H 'X-API-Key: {raw}' -H 'Content-Type: application/json' "
            '-d \'{"name": "demo.requests"}\' http://127.0.0.1:8000/api/metrics/counter'
        )
        self.stdout.write(
            "Grafana: add a Prometheus data source with URL http://127.0.0.1:8000 and header "
            f"X-API-Key: {raw}"
        )
