from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from apikeys.models import Scope
from apikeys.namespaces import NAMESPACES_MAX, namespaces_parse
from apikeys.services import apikey_create, scopes_check


def parse_scopes(value: str) -> list[str]:
    try:
        scopes = scopes_check(part.strip() for part in value.split(",") if part.strip())
    except ValueError:
        scopes = []
    if not scopes:
        raise CommandError(
            f"--scopes takes a comma-separated list of {', '.join(Scope.values)}; got {value!r}"
        )
    return scopes


class Command(BaseCommand):
    help = "Create an API key and print it once. Only a hash is stored: copy it now."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="What the key is for, e.g. 'web-frontend'.")
        parser.add_argument(
            "--rate-limit", type=int, default=None, help="Requests per minute (default: setting)."
        )
        parser.add_argument(
            "--scopes",
            default="write,read",
            help="Comma-separated: write, read, admin (default write,read; admin may delete "
            "metrics).",
        )
        parser.add_argument(
            "--namespaces",
            default="",
            help=f"Comma-separated metric-name prefixes the key may read and write, e.g. "
            f"checkout.,shared.web. (at most {NAMESPACES_MAX}; default none: every metric).",
        )
        parser.add_argument(
            "--expires-in", type=int, default=None, metavar="DAYS", help="Expire after DAYS days."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        scopes = parse_scopes(options["scopes"])
        try:
            namespaces = namespaces_parse(options["namespaces"])
        except ValueError as exc:
            raise CommandError(f"--namespaces: {exc}") from None
        if options["rate_limit"] is not None and options["rate_limit"] < 1:
            raise CommandError("--rate-limit must be at least 1 (requests per minute)")
        if options["expires_in"] is not None and options["expires_in"] < 1:
            raise CommandError("--expires-in must be at least 1 (days)")
        now = timezone.now()
        expires_at = now + timedelta(days=options["expires_in"]) if options["expires_in"] else None
        try:
            key, raw = apikey_create(
                name=options["name"],
                scopes=scopes,
                rate_limit=options["rate_limit"],
                expires_at=expires_at,
                now=now,
                namespaces=namespaces,
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        expiry = key.expires_at.isoformat(timespec="seconds") if key.expires_at else "never"
        self.stdout.write(
            f"Created API key {key.pk} {key.name!r}: prefix {key.prefix}, scopes "
            f"{','.join(key.scopes)}, namespaces {','.join(key.namespaces) or 'all'}, "
            f"{key.rate_limit} requests/minute, expires {expiry}."
        )
        self.stdout.write("The key, shown only this once:")
        self.stdout.write(raw)
