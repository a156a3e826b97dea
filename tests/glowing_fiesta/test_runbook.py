"""docs/RUNBOOK.md (and the commands of DEPLOYMENT.md and OPERATIONS.md) names only what exists.

The documents are read as an operator would copy them: the shell lines of their code blocks and
inline code. Every `manage.py`/`gf_manage` command must exist and accept the options shown, every
`systemctl`/`journalctl` unit must be shipped in deploy/systemd/ (or be a well-known system
unit), every `make` target must be in the Makefile, every `migrate <app> <migration>` and every
`<app>.<migration>` must name a real migration (and every migration must be in the runbook), every
`glowing_fiesta_…` metric must be defined in glowing_fiesta/monitoring/ or selfmetrics/, every log
message and logger quoted must be one the code writes, every setting named must exist, and every
`shell -c` snippet must compile and import only what exists.
"""

from __future__ import annotations

import ast
import importlib
import re
import shlex
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import CommandError, get_commands, load_command_class
from django.db.migrations.loader import MigrationLoader

ROOT = Path(__file__).resolve().parents[2]
RUNBOOK = ROOT / "docs" / "RUNBOOK.md"
DOCS = [RUNBOOK, ROOT / "docs" / "DEPLOYMENT.md", ROOT / "docs" / "OPERATIONS.md"]
PROJECT_APPS = (
    "metrics", "protocols", "apikeys", "idempotency", "retention", "selfmetrics", "alerting",
)  # fmt: skip
SOURCE_DIRS = ("glowing_fiesta", *PROJECT_APPS)

# Debian 12's: postgresql@15-main is the unit of its default cluster.
SYSTEM_UNITS = {"postgresql", "postgresql@15-main", "redis-server", "nginx", "certbot.timer",
                "systemd-timesyncd", "rabbitmq-server"}  # fmt: skip
# systemctl verbs that act on units, and those that take none.
UNIT_VERBS = {
    "start", "stop", "restart", "reload", "try-restart", "reload-or-restart", "enable",
    "disable", "status", "is-active", "is-enabled", "is-failed", "kill", "edit", "cat", "show",
}  # fmt: skip
PLAIN_VERBS = {"daemon-reload", "list-units", "list-timers", "list-unit-files"}
# systemctl/journalctl options followed by a value.
VALUED_OPTIONS = {"-s", "--signal", "-p", "--property", "-n", "--lines", "--since", "--until",
                  "-o", "--output", "--kill-whom"}  # fmt: skip
# Shell variables the runbook itself defines (its gf_manage function reads them).
SHELL_VARIABLES = {"GF_DIR", "GF_ENV"}
# Loggers of libraries the service configures (glowing_fiesta/logging.py, logging_config).
LIBRARY_LOGGERS = {"django.request"}
PLACEHOLDER = "PLACEHOLDER"


# --- reading the documents -------------------------------------------------------------------

# Fences may be indented (a block inside a list item).
FENCE = re.compile(r"^[ \t]*```(\w*)\n(.*?)^[ \t]*```", re.S | re.M)


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def code_blocks(text: str, languages: tuple[str, ...] = ("sh", "")) -> list[str]:
    return [body for lang, body in FENCE.findall(text) if lang in languages]


def inline_code(text: str) -> list[str]:
    """Inline code spans outside fenced blocks, whitespace (and line breaks) collapsed."""
    prose = FENCE.sub("", text)
    return [" ".join(span.split()) for span in re.findall(r"`([^`]+)`", prose)]


def _unplaceholder(line: str) -> str:
    # <name>, <id or 8-character prefix>: one argument; heredocs (<<'SQL') are left alone.
    return re.sub(r"(?<![<\w])<(?!<)[^<>\n]+>", PLACEHOLDER, line)


def shell_lines(block: str) -> Iterator[str]:
    """The logical command lines of a shell block: continuations joined, heredoc bodies and
    function definitions skipped."""
    lines = block.replace("\\\n", " ").splitlines()
    heredoc_end = None
    in_function = False
    for line in lines:
        if heredoc_end is not None:
            if line.strip() == heredoc_end:
                heredoc_end = None
            continue
        if in_function:
            in_function = not re.fullmatch(r"\s*\}\s*", line)
            continue
        if re.match(r"\s*[\w-]+\(\)\s*\{", line):
            in_function = True
            continue
        marker = re.search(r"<<-?\s*['\"]?(\w+)['\"]?", line)
        if marker:
            heredoc_end = marker.group(1)
        yield line


def segments(line: str) -> list[list[str]]:
    """The simple commands of a line: split at pipes and lists, cut at redirections, without
    comments, leading variable assignments and sudo."""
    lexer = shlex.shlex(_unplaceholder(line), posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    commands: list[list[str]] = [[]]
    redirected = False
    for token in lexer:
        if token in {"|", "||", "&&", ";", "&", "(", ")"}:
            commands.append([])
            redirected = False
        elif set(token) <= set("<>&") or redirected:
            redirected = True
        else:
            commands[-1].append(token)
    result = []
    for words in commands:
        while words and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", words[0]):
            words = words[1:]
        if words[:1] == ["sudo"]:
            words = words[1:]
            if words[:1] == ["-u"]:
                words = words[2:]
        if words:
            result.append(words)
    return result


def doc_commands(path: Path) -> Iterator[tuple[str, list[str], bool]]:
    """(where, words, from_block) of every simple command in the document."""
    text = _text(path)
    for block in code_blocks(text):
        for line in shell_lines(block):
            for words in segments(line):
                yield f"{path.name}: {line.strip()}", words, True
    for span in inline_code(text):
        try:
            found = segments(span)
        except ValueError:  # a span that is not shell (an unbalanced quote in prose)
            continue
        for words in found:
            yield f"{path.name}: `{span}`", words, False


def commands_named(program: str) -> list[tuple[str, list[str], bool]]:
    """Every use of `program` (its arguments), across the documents."""
    found = []
    for path in DOCS:
        for where, words, block in doc_commands(path):
            if words[0] == program or words[0].endswith("/" + program):
                found.append((where, words[1:], block))
    return found


def manage_invocations() -> list[tuple[str, str, list[str]]]:
    """(where, command, arguments) of every `manage.py X` and `gf_manage X`."""
    found = []
    for path in DOCS:
        for where, words, _ in doc_commands(path):
            for i, word in enumerate(words):
                if (word == "gf_manage" and i == 0) or word.endswith("manage.py"):
                    rest = words[i + 1 :]
                    if rest and not rest[0].startswith("$"):
                        found.append((where, rest[0], rest[1:]))
                    break
    return found


# --- what exists -----------------------------------------------------------------------------


@cache
def migration_loader() -> MigrationLoader:
    return MigrationLoader(None, ignore_no_migrations=True)


def migration_exists(app: str, name: str) -> bool:
    loader = migration_loader()
    if app not in loader.migrated_apps:
        return False
    if name == "zero":
        return True
    try:
        loader.get_migration_by_prefix(app, name)
    except (KeyError, ValueError):  # none, or ambiguous (AmbiguityError is a ValueError)
        return False
    return True


@cache
def unit_files() -> frozenset[str]:
    return frozenset(path.name for path in (ROOT / "deploy" / "systemd").glob("*.service"))


def unit_exists(unit: str, files: frozenset[str] | None = None) -> bool:
    files = unit_files() if files is None else files
    if unit == PLACEHOLDER or unit in SYSTEM_UNITS:
        return True
    name = unit if "." in unit else unit + ".service"
    if name in files:
        return True
    # An instance of a template unit: name@instance.service from name@.service.
    template = re.sub(r"@[^.]+\.", "@.", name)
    return "@" in name and template in files


@cache
def make_targets() -> frozenset[str]:
    text = _text(ROOT / "Makefile")
    return frozenset(re.findall(r"^([A-Za-z0-9_.-]+):(?!=)", text, re.M))


@cache
def defined_metrics() -> frozenset[str]:
    """Exposed Prometheus names: counters get _total, histograms _bucket, _count and _sum."""
    names: set[str] = set()
    pattern = re.compile(
        r"\b(Counter|Histogram|Gauge|\w+MetricFamily)\(\s*\"(glowing_fiesta_\w+)\""
    )
    paths = [
        *(ROOT / "glowing_fiesta" / "monitoring").glob("*.py"),
        *(ROOT / "selfmetrics").glob("*.py"),
    ]
    for path in paths:
        for kind, name in pattern.findall(_text(path)):
            if kind == "Counter" or kind == "CounterMetricFamily":
                names.add(name + "_total")
            elif kind == "Histogram":
                names.update({name, name + "_bucket", name + "_count", name + "_sum"})
            else:
                names.add(name)
    return frozenset(names)


def _sources() -> Iterator[tuple[str, ast.Module]]:
    for top in SOURCE_DIRS:
        for path in (ROOT / top).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            yield module.removesuffix(".__init__"), ast.parse(_text(path))


def _template_regex(node: ast.expr) -> list[str]:
    """Regexes of the messages a logging call's first argument can produce."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        parts = re.split(r"(%[-#0 +]*\d*(?:\.\d+)?[sdrfi])", node.value)
        return [
            "".join(
                (r"-?\d+" if part.endswith(("d", "i")) else ".+")
                if re.fullmatch(r"%[-#0 +]*\d*(?:\.\d+)?[sdrfi]", part)
                else re.escape(part)
                for part in parts
            )
        ]
    if isinstance(node, ast.JoinedStr):
        return [
            "".join(
                # A formatted value is one word (a result, a state), never a sentence.
                re.escape(value.value) if isinstance(value, ast.Constant) else r"\S+"
                for value in node.values
            )
        ]
    if isinstance(node, ast.IfExp):
        return _template_regex(node.body) + _template_regex(node.orelse)
    return []


LEVELS = {"debug", "info", "warning", "error", "exception", "critical"}


@cache
def log_templates() -> tuple[str, ...]:
    """Every message a logger of the project writes, as a regex."""
    templates: list[str] = []
    for _, tree in _sources():
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            target = node.func.value
            if not (isinstance(target, ast.Name) and "logger" in target.id):
                continue
            if node.func.attr in LEVELS and node.args:
                templates += _template_regex(node.args[0])
            elif node.func.attr == "log" and len(node.args) > 1:
                templates += _template_regex(node.args[1])
    return tuple(templates)


@cache
def logger_names() -> frozenset[str]:
    names = set(LIBRARY_LOGGERS)
    for module, tree in _sources():
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "getLogger"
                and node.args
            ):
                arg = node.args[0]
                if isinstance(arg, ast.Name) and arg.id == "__name__":
                    names.add(module)
                elif isinstance(arg, ast.Constant):
                    names.add(arg.value)
    return frozenset(names)


def message_exists(message: str, *, prefix: bool = False) -> bool:
    for template in log_templates():
        if re.fullmatch(template, message):
            return True
        if prefix and re.match(re.escape(message), _literal_head(template)):
            return True
    return False


def _literal_head(template: str) -> str:
    """The literal text a template regex starts with (up to its first placeholder)."""
    head = re.split(r"\.\+|-\?\\d\+|\\S\+", template, maxsplit=1)[0]
    return re.sub(r"\\(.)", r"\1", head)


@cache
def environment_variables() -> frozenset[str]:
    names: set[str] = set()
    for path in (ROOT / ".env.example", ROOT / "deploy" / "glowing-fiesta.env.example"):
        names.update(re.findall(r"^#?\s?([A-Z][A-Z0-9_]+)=", _text(path), re.M))
    return frozenset(names)


def setting_exists(name: str) -> bool:
    return (
        name in environment_variables()
        or hasattr(settings, name)
        or name in settings.DATABASES["default"]
    )


def section(text: str, heading: str) -> str:
    match = re.search(rf"^## [^\n]*{re.escape(heading)}[^\n]*\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert match, f"no section {heading!r}"
    return match.group(1)


# --- the checks ------------------------------------------------------------------------------


def _manage_errors(invocations: list[tuple[str, str, list[str]]]) -> list[str]:
    commands = get_commands()
    errors = []
    for where, name, args in invocations:
        if name not in commands:
            errors.append(f"{where}: no management command {name!r}")
            continue
        command = load_command_class(commands[name], name)
        parser = command.create_parser("manage.py", name)
        try:
            options = vars(parser.parse_args(args))
        except CommandError as exc:
            errors.append(f"{where}: {name} {' '.join(args)}: {exc}")
            continue
        if name == "migrate" and options.get("app_label"):
            app, migration = options["app_label"], options.get("migration_name")
            if migration and not migration_exists(app, migration):
                errors.append(f"{where}: no migration {app} {migration}")
            elif not migration and app not in migration_loader().migrated_apps:
                errors.append(f"{where}: no app with migrations {app!r}")
        if name == "shell" and options.get("command"):
            errors += [f"{where}: {error}" for error in _snippet_errors(options["command"])]
    return errors


def _snippet_errors(code: str) -> list[str]:
    try:
        tree = ast.parse(code)
    except SyntaxError as exc:
        return [f"shell -c does not compile: {exc}"]
    errors = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            module = importlib.import_module(node.module)
            errors += [
                f"shell -c: {node.module} has no {alias.name}"
                for alias in node.names
                if not hasattr(module, alias.name)
            ]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                importlib.import_module(alias.name)
    return errors


def test_every_management_command_and_option_exists():
    invocations = manage_invocations()
    named = {name for _, name, _ in invocations}
    # The commands the runbook relies on are all found by the parser.
    assert {"migrate", "create_api_key", "revoke_api_key", "apply_retention", "shell"} <= named
    assert _manage_errors(invocations) == []


def test_a_misspelt_command_option_or_migration_is_caught():
    where = "example"
    assert _manage_errors([(where, "create_api_keys", ["ci"])])
    assert _manage_errors([(where, "create_api_key", ["ci", "--rate-limits", "5"])])
    assert _manage_errors([(where, "migrate", ["metrics", "0042"])])
    assert _manage_errors([(where, "migrate", ["metric", "0008"])])
    assert _manage_errors([(where, "shell", ["-c", "from metrics.batches import batch_retry"])])
    assert not _manage_errors([(where, "migrate", ["metrics", "0008", "--plan"])])


def test_every_systemctl_and_journalctl_unit_is_shipped_or_well_known():
    errors = []
    uses = commands_named("systemctl")
    assert len(uses) > 10
    for where, args, block in uses:
        words = _without_options(args)
        if not words:
            if block:
                errors.append(f"{where}: no verb")
            continue
        verb, units = words[0], words[1:]
        if verb in PLAIN_VERBS:
            continue
        if verb not in UNIT_VERBS:
            errors.append(f"{where}: unknown systemctl verb {verb!r}")
        elif not units and block:
            errors.append(f"{where}: {verb} without a unit")
        errors += [f"{where}: no unit {unit!r}" for unit in units if not unit_exists(unit)]
    for where, args, _ in commands_named("journalctl"):
        for i, word in enumerate(args):
            unit = args[i + 1] if word == "-u" and i + 1 < len(args) else None
            unit = word.removeprefix("--unit=") if word.startswith("--unit=") else unit
            if unit and not unit_exists(unit):
                errors.append(f"{where}: no unit {unit!r}")
    assert errors == []
    assert not unit_exists("glowing-fiesta-workers")
    assert unit_exists("glowing-fiesta-worker.service")


def _without_options(args: list[str]) -> list[str]:
    words, skip = [], False
    for word in args:
        if skip:
            skip = False
        elif word in VALUED_OPTIONS:
            skip = True
        elif not word.startswith("-"):
            words.append(word)
    return words


def test_template_units_are_accounted_for():
    files = frozenset({"glowing-fiesta-worker@.service"})
    assert unit_exists("glowing-fiesta-worker@2", files)
    assert unit_exists("glowing-fiesta-worker@eu.service", files)
    assert not unit_exists("glowing-fiesta-worker", files)
    assert not unit_exists("glowing-fiesta-web@2", files)


def test_every_make_target_exists():
    uses = commands_named("make")
    assert uses
    errors = [
        f"{where}: no make target {word!r}"
        for where, args, _ in uses
        for word in args
        if "=" not in word and not word.startswith("-") and word not in make_targets()
    ]
    assert errors == []


def test_every_migration_named_exists_and_the_runbook_lists_every_migration():
    text = "\n".join(_text(path) for path in DOCS)
    named = re.findall(rf"`({'|'.join(PROJECT_APPS)})\.(\d{{4}}\w*)`", text)
    assert named
    assert [f"{a}.{m}" for a, m in named if not migration_exists(a, m)] == []
    # `migrate <app> <migration>` wherever it is written, with or without manage.py before it.
    targets = re.findall(r"\bmigrate ([a-z_]+) ([0-9]{4}\w*|zero)\b", text)
    assert len(targets) >= 13
    assert [f"migrate {a} {m}" for a, m in targets if not migration_exists(a, m)] == []
    runbook = _text(RUNBOOK)
    loader = migration_loader()
    missing = [
        f"{app}.{name}"
        for app, name in loader.disk_migrations
        if app in PROJECT_APPS
        and f"`{app}.{name}`" not in runbook
        and f"`{app}.{name[:4]}`" not in runbook
    ]
    assert missing == [], "add them to RUNBOOK.md's migration tables"
    # Each has its reverse command in the rollback table.
    for app, name in loader.disk_migrations:
        if app in PROJECT_APPS:
            assert f"| `{app}.{name[:4]}` | `migrate {app} " in runbook, f"{app}.{name}"


def test_every_metric_named_is_defined_by_the_monitoring_package_or_selfmetrics():
    assert "glowing_fiesta_ingestion_failures_total" in defined_metrics()
    assert "glowing_fiesta_request_duration_seconds_count" in defined_metrics()
    errors = []
    for path in DOCS:
        for name in set(re.findall(r"\bglowing_fiesta_[a-z0-9_]+", _text(path))):
            if name not in defined_metrics():
                errors.append(f"{path.name}: {name}")
    assert errors == []


def _quoted_messages(text: str) -> Iterator[tuple[str, bool]]:
    for message in re.findall(r'\.message == "([^"]+)"', text):
        yield message, False
    for message in re.findall(r'\.message \| startswith\("([^"]+)"\)', text):
        yield message, True
    for message in re.findall(r'"message": "([^"]+)"', text):
        yield message, False
    # The runbook's prose: `message starting <text>` quotes the start of a templated message.
    for message in re.findall(r"message starting `([^`]+)`", text):
        yield message, True


def test_every_log_message_and_logger_quoted_is_written_by_the_code():
    assert message_exists("batch failed")
    assert message_exists("statsd flush dropped 3 samples past STATSD_MAX_SAMPLES_PER_FLUSH=10")
    assert not message_exists("batch done twice")
    assert not message_exists("database unreachable")
    errors, count = [], 0
    for path in DOCS:
        text = _text(path)
        for message, prefix in _quoted_messages(text):
            count += 1
            if not message_exists(message, prefix=prefix):
                errors.append(f"{path.name}: no log message {message!r}")
        for name in re.findall(r'\.logger == "([^"]+)"', text):
            if name not in logger_names():
                errors.append(f"{path.name}: no logger {name!r}")
    assert count > 15
    assert errors == []


def test_every_problem_type_named_exists():
    source = "\n".join(_text(path) for top in SOURCE_DIRS for path in (ROOT / top).rglob("*.py"))
    slugs = set(re.findall(r"\b[45]\d\d `([a-z]+(?:-[a-z]+)+)`", _text(RUNBOOK)))
    assert {"database-unavailable", "https-required", "type-conflict"} <= slugs
    assert [slug for slug in slugs if f'"{slug}"' not in source] == []


def test_every_setting_and_variable_named_exists():
    text = _text(RUNBOOK)
    checklist = section(text, "Production-readiness checklist")
    in_checklist = {
        name
        for span in inline_code(checklist)
        for name in re.findall(r"\b[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+\b", span)
    }
    assert {"DJANGO_SECRET_KEY", "API_KEY_PEPPER", "ALLOWED_HOSTS", "CELERY_QUEUE"} <= in_checklist
    everywhere = {
        name
        for span in inline_code(text) + code_blocks(text)
        for name in re.findall(r"\b[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+\b", span)
    } - SHELL_VARIABLES
    assert sorted(name for name in everywhere | in_checklist if not setting_exists(name)) == []
    assert not setting_exists("QUEUE_STALE_SECOND")


def test_the_sections_on_more_hosts_name_the_script_and_the_settings_that_exist():
    text = _text(RUNBOOK)
    hosts = section(text, "Adding a host")
    assert "deploy/multihost/up" in hosts and "deploy/multihost/down" in hosts
    assert all((ROOT / "deploy" / "multihost" / name).exists() for name in ("up", "down"))
    rabbitmq = section(text, "Broker on RabbitMQ")
    assert "consumer_timeout = 3600000" in rabbitmq
    assert "amqp://" in rabbitmq and settings.CELERY_TASK_ACKS_LATE
    # The node's consumer_timeout the section asks for outlasts every task.
    assert settings.CELERY_TASK_TIME_LIMIT < 3600


def test_the_checklist_is_one_line_per_item_each_naming_its_proof():
    items = re.findall(r"^- \[ \] (.+)$", section(_text(RUNBOOK), "Production-readiness"), re.M)
    assert len(items) >= 15
    assert [item for item in items if "`" not in item] == []


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("sudo systemctl reload glowing-fiesta-web  # HUP", [["systemctl", "reload", "glowing-fiesta-web"]]),
        ("GF_DIR=/x gf_manage migrate metrics 0008 --plan", [["gf_manage", "migrate", "metrics", "0008", "--plan"]]),
        ("gf_manage dbshell <<'SQL'", [["gf_manage", "dbshell"]]),
        ("journalctl -u a -o cat | jq -c 'select(.x)' | tail -3", [["journalctl", "-u", "a", "-o", "cat"], ["jq", "-c", "select(.x)"], ["tail", "-3"]]),
        ("gf_manage revoke_api_key <the key's prefix>", [["gf_manage", "revoke_api_key", PLACEHOLDER]]),
        ("sudo nginx -t && sudo systemctl reload nginx", [["nginx", "-t"], ["systemctl", "reload", "nginx"]]),
    ],
)  # fmt: skip
def test_shell_lines_are_split_as_a_shell_would(line, expected):
    assert segments(line) == expected


def test_the_replica_sections_say_how_to_add_one_and_quote_what_the_service_logs():
    text = _text(RUNBOOK)
    adding, lagging = section(text, "Adding a replica"), section(text, "Replica lagging")
    assert "pg_basebackup" in adding and "DATABASE_REPLICA_URL" in adding
    quoted = set(re.findall(r'"message": "([^"]+)"', lagging))
    assert {
        "replica lagging; reading from the primary",
        "replica within its lag bound",
        "replica not used; reading from the primary",
    } <= quoted
    assert [message for message in quoted if not message_exists(message)] == []
