"""The Go-template subset of Prometheus's alert labels and annotations.

Prometheus expands labels and annotations with Go's text/template, its data `.Labels`,
`.ExternalLabels`, `.ExternalURL` and `.Value`, preceded by
`{{$labels := .Labels}}{{$externalLabels := .ExternalLabels}}{{$externalURL := .ExternalURL}}
{{$value := .Value}}`, and `missingkey=zero` (an absent label prints as the empty string).

This module parses a template once into a list of parts, refusing at load time (so
`check_rules` names it) every construct outside the subset: control structures (`if`, `range`,
`with`, `define`, `template`, `block`), variable assignment, parenthesised pipelines and
functions other than those listed in FUNCTIONS. Values print as Go's `fmt.Sprint` prints them:
a float as `%v` (`1e+06`, `0.5`, `NaN`, `+Inf`), a label map as `map[a:b c:d]`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from typing import Any


class TemplateError(ValueError):
    """A template outside the supported subset, or one that does not parse."""


@dataclass(frozen=True)
class Data:
    labels: Mapping[str, str]
    external_labels: Mapping[str, str]
    external_url: str
    value: float


# --- Go's formatting ----------------------------------------------------------------------------


def go_float(value: float) -> str:
    """A float as Go's `%v` writes it: the shortest digits that read back, with an exponent
    below 1e-4 and from 1e6 (`%g` with the shortest precision decides at 6 digits)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "-0" if math.copysign(1, value) < 0 else "0"
    sign, digits, exponent = Decimal(repr(value)).normalize().as_tuple()
    text = "".join(map(str, digits))
    nd = len(text)
    exp = nd + int(exponent) - 1
    prefix = "-" if sign else ""
    if exp < -4 or exp >= 6:
        mantissa = text[0] + ("." + text[1:] if nd > 1 else "")
        return f"{prefix}{mantissa}e{'-' if exp < 0 else '+'}{abs(exp):02d}"
    if exp >= nd - 1:
        return prefix + text + "0" * (exp - nd + 1)
    if exp >= 0:
        return prefix + text[: exp + 1] + "." + text[exp + 1 :]
    return prefix + "0." + "0" * (-exp - 1) + text


def go_g(value: float, precision: int = 4) -> str:
    """Go's `%.<precision>g` (Python's `%g` agrees but for the names of NaN and infinities)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return f"%.{precision}g" % value


def go_print(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return go_float(value)
    if isinstance(value, Mapping):
        return "map[" + " ".join(f"{k}:{go_print(value[k])}" for k in sorted(value)) + "]"
    return str(value)


def _number(value: Any) -> float:
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            raise TemplateError(f"can't convert {value!r} to float") from None
    if isinstance(value, int | float):
        return float(value)
    raise TemplateError(f"can't convert {go_print(value)!r} to float")


def humanize(value: Any) -> str:
    v = _number(value)
    if v == 0 or math.isnan(v) or math.isinf(v):
        return go_g(v)
    prefix = ""
    if abs(v) >= 1:
        for p in ("k", "M", "G", "T", "P", "E", "Z", "Y"):
            if abs(v) < 1000:
                break
            prefix, v = p, v / 1000
        return go_g(v) + prefix
    for p in ("m", "u", "n", "p", "f", "a", "z", "y"):
        if abs(v) >= 1:
            break
        prefix, v = p, v * 1000
    return go_g(v) + prefix


def humanize1024(value: Any) -> str:
    v = _number(value)
    if abs(v) <= 1 or math.isnan(v) or math.isinf(v):
        return go_g(v)
    prefix = ""
    for p in ("ki", "Mi", "Gi", "Ti", "Pi", "Ei", "Zi", "Yi"):
        if abs(v) < 1024:
            break
        prefix, v = p, v / 1024
    return go_g(v) + prefix


def humanize_duration(value: Any) -> str:
    v = _number(value)
    if math.isnan(v) or math.isinf(v):
        return go_g(v)
    if v == 0:
        return go_g(v) + "s"
    if abs(v) >= 1:
        sign = "-" if v < 0 else ""
        v = abs(v)
        duration = int(v)
        seconds, minutes = duration % 60, (duration // 60) % 60
        hours, days = (duration // 3600) % 24, duration // 86400
        if days:
            return f"{sign}{days}d {hours}h {minutes}m {seconds}s"
        if hours:
            return f"{sign}{hours}h {minutes}m {seconds}s"
        if minutes:
            return f"{sign}{minutes}m {seconds}s"
        return f"{sign}{go_g(v)}s"
    prefix = ""
    for p in ("m", "u", "n", "p", "f", "a", "z", "y"):
        if abs(v) >= 1:
            break
        prefix, v = p, v * 1000
    return f"{go_g(v)}{prefix}s"


def humanize_percentage(value: Any) -> str:
    return go_g(_number(value) * 100) + "%"


_VERB = re.compile(r"%([-+# 0]*)(\d+)?(?:\.(\d+))?([a-zA-Z%])")


def printf(fmt: Any, *args: Any) -> str:
    """Go's fmt.Sprintf for the verbs templates use: %s %v %q %d %f %e %g %x and %%."""
    if not isinstance(fmt, str):
        raise TemplateError("printf's format must be a string")
    queue = list(args)

    def one(match: re.Match) -> str:
        flags, width, precision, verb = match.groups()
        if verb == "%":
            return "%"
        if not queue:
            return f"%!{verb}(MISSING)"
        arg = queue.pop(0)
        spec = "%" + flags + (width or "") + (f".{precision}" if precision is not None else "")
        if verb in "sv":
            return (spec + "s") % go_print(arg)
        if verb == "q":
            return '"' + go_print(arg).replace("\\", "\\\\").replace('"', '\\"') + '"'
        if verb in "dx":
            if isinstance(arg, float) and not arg.is_integer():
                return f"%!{verb}(float64={go_float(arg)})"
            return (spec + verb) % int(_number(arg))
        if verb in "feEgG":
            number = _number(arg)
            if math.isnan(number) or math.isinf(number):
                return go_g(number)
            return (spec + verb) % number
        raise TemplateError(f"printf verb %{verb} is not supported")

    return _VERB.sub(one, fmt)


FUNCTIONS: dict[str, Callable[..., str]] = {
    "humanize": humanize,
    "humanize1024": humanize1024,
    "humanizeDuration": humanize_duration,
    "humanizePercentage": humanize_percentage,
    "printf": printf,
    "toUpper": lambda s: str(s).upper(),
    "toLower": lambda s: str(s).lower(),
    "title": lambda s: str(s).title(),
}
_KEYWORDS = frozenset({"if", "else", "end", "range", "with", "define", "template", "block"})


# --- parsing ------------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<string>"(?:[^"\\\n]|\\.)*")
      | (?P<raw>`[^`]*`)
      | (?P<number>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)(?![\w.])
      | (?P<variable>\$[A-Za-z_0-9]*(?:\.[A-Za-z_][A-Za-z_0-9]*)*)
      | (?P<field>(?:\.[A-Za-z_][A-Za-z_0-9]*)+|\.)
      | (?P<ident>[A-Za-z_][A-Za-z_0-9]*)
      | (?P<pipe>\|)
      | (?P<other>\S+)
    )""",
    re.VERBOSE,
)
_VARIABLES = {"$labels": "Labels", "$externalLabels": "ExternalLabels", "$value": "Value"}
_VARIABLES["$externalURL"] = "ExternalURL"
_ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.DOTALL)


@dataclass(frozen=True)
class Operand:
    kind: str  # "literal" or "path"
    value: Any  # the literal, or the path from the data's root: ("Labels", "instance")


@dataclass(frozen=True)
class Command:
    function: str | None  # None: an operand alone
    args: tuple[Operand, ...]


Part = str | tuple[Command, ...]


def _unquote(text: str) -> str:
    try:
        return bytes(text[1:-1], "utf-8").decode("unicode_escape")
    except UnicodeDecodeError:
        raise TemplateError(f"bad string literal {text}") from None


def _operand(kind: str, text: str) -> Operand:
    if kind == "string":
        return Operand("literal", _unquote(text))
    if kind == "raw":
        return Operand("literal", text[1:-1])
    if kind == "number":
        number = float(text)
        return Operand("literal", int(number) if re.fullmatch(r"[-+]?\d+", text) else number)
    if kind == "variable":
        head, *fields = text.split(".")
        if head == "$":
            return Operand("path", tuple(fields))
        if head not in _VARIABLES:
            raise TemplateError(f"undefined variable {head!r}")
        return Operand("path", (_VARIABLES[head], *fields))
    if kind == "field":
        return Operand("path", tuple(f for f in text.split(".") if f))
    raise TemplateError(f"unexpected {text!r}")


def _pipeline(action: str) -> tuple[Command, ...]:
    tokens: list[tuple[str, str]] = []
    position = 0
    while position < len(action):
        match = _TOKEN.match(action, position)
        if match is None or match.end() == position:
            break
        position = match.end()
        kind = match.lastgroup
        assert kind is not None
        tokens.append((kind, match.group(kind)))
    if not tokens:
        raise TemplateError("missing value for command")
    commands: list[Command] = []
    current: list[tuple[str, str]] = []
    for token in [*tokens, ("pipe", "|")]:
        if token[0] != "pipe":
            current.append(token)
            continue
        if not current:
            raise TemplateError("missing command in pipeline")
        commands.append(_command(current))
        current = []
    return tuple(commands)


def _command(tokens: list[tuple[str, str]]) -> Command:
    kind, text = tokens[0]
    if kind == "other":
        if text.startswith(":=") or text.startswith("="):
            raise TemplateError("variable assignment is not supported")
        if text.startswith("("):
            raise TemplateError("parenthesised pipelines are not supported")
        raise TemplateError(f"unexpected {text!r}")
    if kind == "ident":
        if text in _KEYWORDS:
            raise TemplateError(f"{{{{{text}}}}} is not supported (no control structures)")
        if text in ("true", "false"):
            return Command(None, (Operand("literal", text == "true"),))
        if text not in FUNCTIONS:
            raise TemplateError(f'function "{text}" not defined or not supported')
        args = tuple(_argument(kind, text) for kind, text in tokens[1:])
        return Command(text, args)
    if len(tokens) > 1:
        following = tokens[1][1]
        if following.startswith(":=") or following.startswith("="):
            raise TemplateError("variable assignment is not supported")
        raise TemplateError(f"can't give argument to non-function {text}")
    return Command(None, (_operand(kind, text),))


def _argument(kind: str, text: str) -> Operand:
    if kind in ("ident", "other", "pipe"):
        raise TemplateError(f"{text!r} as an argument is not supported")
    return _operand(kind, text)


@lru_cache(maxsize=4096)
def template_parse(text: str) -> tuple[Part, ...]:
    """The template as text and actions; TemplateError where it leaves the subset."""
    parts: list[Part] = []
    position = 0
    for match in _ACTION.finditer(text):
        literal = text[position : match.start()]
        if match.group(1):
            literal = literal.rstrip()
        if parts and isinstance(parts[-1], str) and parts[-1] == "\x00trim":
            parts.pop()
            literal = literal.lstrip()
        if literal:
            parts.append(literal)
        body = match.group(2).strip()
        if body.startswith("/*"):
            if not body.endswith("*/"):
                raise TemplateError("unclosed comment")
        else:
            parts.append(_pipeline(body))
        if match.group(3):
            parts.append("\x00trim")
        position = match.end()
    rest = text[position:]
    if "{{" in rest:
        raise TemplateError("unclosed action")
    if parts and parts[-1] == "\x00trim":
        parts.pop()
        rest = rest.lstrip()
    if rest:
        parts.append(rest)
    return tuple(parts)


def template_check(text: str) -> None:
    """Raise TemplateError naming the construct if `text` is outside the supported subset."""
    template_parse(text)


def _resolve(operand: Operand, data: Data) -> Any:
    if operand.kind == "literal":
        return operand.value
    root: Any = {
        "Labels": data.labels,
        "ExternalLabels": data.external_labels,
        "ExternalURL": data.external_url,
        "Value": data.value,
    }
    for name in operand.value:
        if isinstance(root, Mapping):
            root = root.get(name, "")
        else:
            raise TemplateError(f"can't evaluate field {name} in type {type(root).__name__}")
    return root


def template_expand(text: str, data: Data) -> str:
    """The template rendered with `data`. A template that fails while running renders as
    Prometheus renders it: `<error expanding template: …>`."""
    try:
        out = []
        for part in template_parse(text):
            if isinstance(part, str):
                out.append(part)
                continue
            value: Any = None
            for index, command in enumerate(part):
                args = [_resolve(a, data) for a in command.args]
                if index > 0:
                    args.append(value)
                value = args[0] if command.function is None else FUNCTIONS[command.function](*args)
            out.append(go_print(value))
        return "".join(out)
    except (TemplateError, TypeError, ValueError) as exc:
        return f"<error expanding template: {exc}>"
