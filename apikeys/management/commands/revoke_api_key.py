from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apikeys.selectors import apikey_find
from apikeys.services import apikey_revoke


class Command(BaseCommand):
    help = "Revoke an API key by its id or its 8-character prefix."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("id_or_prefix", help="The key's id or prefix (see list_api_keys).")

    def handle(self, *args: Any, **options: Any) -> None:
        key = apikey_find(id_or_prefix=options["id_or_prefix"].strip())
        if key is None:
            raise CommandError(
                f"No API key with id or prefix {options['id_or_prefix']!r}; see list_api_keys."
            )
        if apikey_revoke(key=key):
            self.stdout.write(f"Revoked API key {key.pk} {key.name!r} ({key.prefix}).")
        else:
            self.stdout.write(f"API key {key.pk} {key.name!r} ({key.prefix}) was already revoked.")
