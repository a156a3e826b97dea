from __future__ import annotations

from datetime import datetime
from typing import Any

from django.core.management.base import BaseCommand
from django.utils import timezone

from apikeys.selectors import apikey_list

COLUMNS = (
    "id",
    "name",
    "prefix",
    "scopes",
    "namespaces",
    "rate/min",
    "created",
    "last used",
    "status",
)


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value else "-"


class Command(BaseCommand):
    help = "List API keys (never their secrets or hashes)."

    def handle(self, *args: Any, **options: Any) -> None:
        now = timezone.now()
        rows = [
            (
                str(key.pk),
                key.name,
                key.prefix,
                ",".join(key.scopes),
                ",".join(key.namespaces) or "all",
                str(key.rate_limit),
                _when(key.created_at),
                _when(key.last_used_at),
                key.status(now=now).value,
            )
            for key in apikey_list()
        ]
        if not rows:
            self.stdout.write("No API keys. Create one with: manage.py create_api_key NAME")
            return
        widths = [max(len(row[i]) for row in (COLUMNS, *rows)) for i in range(len(COLUMNS))]
        for row in (COLUMNS, *rows):
            self.stdout.write(
                "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
            )
