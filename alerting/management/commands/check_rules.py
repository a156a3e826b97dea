from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from alerting.rules import RuleError, file_groups, rule_paths


class Command(BaseCommand):
    help = (
        "Check rule files as the service would load them (RULE_FILES unless files are given): "
        "Prometheus's format, PromQL the service evaluates, templates it expands. Exit 1 naming "
        "the file, group and rule of the first problem."
    )

    def add_arguments(self, parser):
        parser.add_argument("files", nargs="*", help="files or globs (default: RULE_FILES)")

    def handle(self, *args, files: list[str], **options):
        patterns = files or settings.RULE_FILES
        paths = rule_paths(patterns)
        missing = [p for p in files if not rule_paths([p])]
        if missing:
            raise CommandError(f"no rule file matches {missing[0]!r}")
        if not paths:
            self.stdout.write("no rule files to check (RULE_FILES matches none)")
        for path in paths:
            try:
                groups = file_groups(path, default_interval_s=settings.RULE_EVALUATION_INTERVAL)
            except RuleError as exc:
                raise CommandError(f"FAILED: {exc}") from None
            count = sum(len(group.rules) for group in groups)
            self.stdout.write(f"Checking {path}\n  SUCCESS: {count} rules found")
