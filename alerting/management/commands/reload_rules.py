from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from alerting.rulesets import ruleset_reload


class Command(BaseCommand):
    help = (
        "Read RULE_FILES again and swap the rules in force for them, in every process at once "
        "(as SIGHUP to beat does). A file that fails keeps the old rules; exit 1 saying why."
    )

    def handle(self, *args, **options):
        result = ruleset_reload(now=timezone.now())
        if not result.ok:
            raise CommandError(f"rules not reloaded, the old ones keep running: {result.error}")
        self.stdout.write(f"loaded {result.groups} groups, {result.rules} rules")
