from django.core.management.base import BaseCommand
from django.utils import timezone

from retention.services import retention_apply


class Command(BaseCommand):
    help = (
        "Remove expired points, rollups and bookkeeping rows now (the same work as the daily "
        "retention.apply task). With --dry-run, print what would be removed and change nothing."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--dry-run", action="store_true", help="count what would be removed; remove nothing"
        )

    def handle(self, *args, dry_run: bool = False, **options):
        counts = retention_apply(now=timezone.now(), dry_run=dry_run)
        if not counts:
            self.stdout.write("skipped: another retention run is in progress")
            return
        self.stdout.write("would delete:" if dry_run else "deleted:")
        width = max(len(table) for table in counts)
        for table, rows in counts.items():
            self.stdout.write(f"  {table:<{width}}  {rows:>12,}")
