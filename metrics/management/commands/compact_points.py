from datetime import datetime

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from metrics.compaction import points_compact


class Command(BaseCommand):
    help = (
        "Compact the closed days still held as raw points (the same work as the daily "
        "metrics.points_compact task). With --dry-run, list the days and change nothing."
    )

    def add_arguments(self, parser):
        parser.add_argument("--now", help="ISO 8601 time to act as of (default: now)")
        parser.add_argument(
            "--dry-run", action="store_true", help="list the days that would be compacted"
        )

    def handle(self, *args, now: str | None = None, dry_run: bool = False, **options):
        at = timezone.now()
        if now:
            try:
                at = datetime.fromisoformat(now)
            except ValueError:
                raise CommandError(f"--now: not an ISO 8601 time: {now!r}") from None
            if at.tzinfo is None:
                raise CommandError("--now: give a time zone (e.g. 2026-01-02T00:00:00Z)")
        result = points_compact(now=at, dry_run=dry_run)
        if dry_run:
            self.stdout.write(f"would compact {len(result.days)} day(s)")
            for day in result.days:
                self.stdout.write(f"  {day.isoformat()}")
            return
        self.stdout.write(
            f"compacted {len(result.days)} day(s), {result.points:,} points in"
            f" {result.seconds:.1f} s ({result.points_per_second:,.0f} points/s);"
            f" {result.raw_bytes:,} bytes -> {result.compact_bytes:,}"
        )
        for day in result.days:
            self.stdout.write(f"  {day.isoformat()}")
