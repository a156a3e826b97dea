from datetime import UTC, datetime

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from alerting.evaluation import groups_evaluate
from alerting.notifications import notifications_send
from alerting.rulesets import ruleset_groups


def _when(text: str) -> datetime:
    try:
        return datetime.fromtimestamp(float(text), UTC)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise CommandError(f"--now must be Unix seconds or ISO 8601, not {text!r}") from None
    if when.tzinfo is None:
        raise CommandError("--now needs a UTC offset (e.g. Z)")
    return when


class Command(BaseCommand):
    help = (
        "Evaluate the rule groups due at --now (default: now), as the beat task does, then "
        "send the queued alerts. A tick already evaluated is skipped."
    )

    def add_arguments(self, parser):
        parser.add_argument("--now", help="the evaluation time: Unix seconds or ISO 8601")
        parser.add_argument("--no-send", action="store_true", help="queue alerts, send none")

    def handle(self, *args, now: str | None = None, no_send: bool = False, **options):
        at = _when(now) if now else timezone.now()
        for outcome in groups_evaluate(ruleset_groups(), now=at):
            status = "evaluated" if outcome.evaluated else "skipped"
            errors = "".join(f"; {rule}: {error}" for rule, error in outcome.errors.items())
            self.stdout.write(f"{outcome.group} {outcome.tick.isoformat()} {status}{errors}")
        if not no_send:
            for url, count in notifications_send().items():
                self.stdout.write(f"sent {count} alerts to {url}")
