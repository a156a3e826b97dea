"""InfluxDB line protocol, the grammar: a strict parser of a body's text into `Line`s.

    measurement[,tag_key=tag_value...] field_key=field_value[,...] [timestamp]

The grammar is InfluxDB's own (its EBNF, `line-protocol.ebnf`, and the reference decoder):

- measurement: any printable characters but an unescaped comma or space, not starting with `#`;
  `\\,` and `\\ ` are a comma and a space. Tag keys, tag values and field keys: the same, less an
  unescaped `=`, and `\\=` is an equals sign. Any other backslash is a literal backslash (as in
  InfluxDB: `a\\b` stays `a\\b`), but a backslash must be followed by a printable character.
- field values: floats (`1`, `-1.5`, `.5`, `1e9`), integers (`1i`, int64), unsigned integers
  (`1u`, uint64), booleans (`t`, `T`, `true`, `True`, `TRUE` and the same for false) and strings
  in double quotes, where `\\"` is a quote and `\\\\` a backslash (a string may span lines).
- timestamp: an optional signed integer in the request's precision, within int64 nanoseconds.
- lines end in `\\n` or `\\r\\n`; blank lines and `#` comments (after optional spaces) are skipped;
  spaces may lead a line and trail it.

A line outside the grammar is a syntax error naming its line number, and nothing is stored (400).

Pure parsing: the reading of a body and the storing of its points are `protocols.influx`.
"""

from __future__ import annotations

import math
import re
from typing import NamedTuple

from glowing_fiesta.exceptions import Problem

# One request may carry this many points (fields, over all its lines): Telegraf sends 1,000
# metrics of several fields at a time; a larger request is a 413, which makes it halve its batch.
POINTS_MAX = 10_000
# Nanoseconds per unit of each precision: InfluxDB 2's names, and 1.x's single letters.
PRECISIONS = {
    "ns": 1,
    "n": 1,
    "us": 1_000,
    "u": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
UINT64_MAX = 2**64 - 1


# --- errors ----------------------------------------------------------------------------------


class LineSyntaxError(Problem):
    """A line outside the grammar; `extra["line"]` is its 1-based number."""

    status = 400
    slug = "line-protocol-syntax"
    title = "Invalid line protocol"

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}", extra={"line": line})
        self.line = line


class TooManyPoints(Problem):
    status = 413
    slug = "too-many-points"
    title = "Too many points"


# --- the grammar -----------------------------------------------------------------------------

_NP = r"\x00-\x1f\x7f"  # non-printable: never allowed outside string field values
# One or more backslashes and the character they precede (neither a backslash nor a control).
_ESC = rf"\\+[^\\{_NP}]"
_MEASUREMENT = rf"(?:[^{_NP} ,\\#]|{_ESC})(?:[^{_NP} ,\\]|{_ESC})*"
_KEY = rf"(?:[^{_NP} ,=\\]|{_ESC})+"
_FLOAT = r"-?(?:\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)"
_BOOL = r"(?:true|True|TRUE|t|T|false|False|FALSE|f|F)"
_STRING = r'"(?:[^"\\]|\\[\s\S])*"'
_VALUE = rf"(?:{_STRING}|-?\d+i|\d+u|{_FLOAT}|{_BOOL})"
_FIELD = rf"{_KEY}={_VALUE}"

_LINE_RE = re.compile(
    rf"""[ ]*
    (?:
        (?P<comment>\#[^\x00-\x08\x0a-\x1f\x7f]*)
      | (?P<series>{_MEASUREMENT}(?:,{_KEY}={_KEY})*)
        \ +(?P<fields>{_FIELD}(?:,{_FIELD})*)
        (?:\ +(?P<ts>-?\d+))?\ *
    )?
    (?:\r?\n|\r?\Z)""",
    re.VERBOSE,
)
_MEASUREMENT_RE = re.compile(_MEASUREMENT)
_TAG_RE = re.compile(rf",({_KEY})=({_KEY})")
_FIELD_RE = re.compile(
    rf"""({_KEY})=(?:
        (?P<s>{_STRING})
      | (?P<i>-?\d+)i
      | (?P<u>\d+)u
      | (?P<f>{_FLOAT})
      | (?P<b>{_BOOL})
    )(?:,|\Z)""",
    re.VERBOSE,
)
_MEASUREMENT_ESCAPE = re.compile(r"\\([ ,])")
_KEY_ESCAPE = re.compile(r"\\([ ,=])")
_STRING_ESCAPE = re.compile(r'\\([\\"])')
_TRUE = frozenset({"t", "T", "true", "True", "TRUE"})


# Named tuples rather than dataclasses: a body holds up to 10,000 fields, and a tuple is built
# several times faster.
class Field(NamedTuple):
    key: str
    kind: str  # "float", "integer", "unsigned", "boolean" or "string"
    value: float | int | bool | str


class Line(NamedTuple):
    """One point of line protocol. `timestamp` is in nanoseconds, None when the line has none."""

    number: int
    measurement: str
    tags: tuple[tuple[str, str], ...]
    fields: tuple[Field, ...]
    timestamp: int | None


def quoted(text: str) -> str:
    """A name for a message: quoted, and cut at 40 characters."""
    return repr(text[:40] + "…") if len(text) > 40 else repr(text)


def _unescape(text: str, pattern: re.Pattern[str]) -> str:
    return pattern.sub(r"\1", text) if "\\" in text else text


def lines_parse(text: str, *, precision: str = "ns", points_max: int = POINTS_MAX) -> list[Line]:
    """Parse a whole body of line protocol; raise LineSyntaxError at the first bad line.

    Raises TooManyPoints as soon as the fields counted pass `points_max`.
    """
    scale = PRECISIONS[precision]
    lines: list[Line] = []
    series_seen: dict[str, tuple[str, tuple[tuple[str, str], ...]]] = {}
    points = 0
    number = 1
    pos = 0
    end = len(text)
    match = _LINE_RE.match
    while pos < end:
        m = match(text, pos)
        if m is None:
            raise LineSyntaxError(number, _diagnose(text, pos))
        start, pos = pos, m.end()
        line_number = number
        number += text.count("\n", start, pos)
        series = m.group("series")
        if series is None:
            continue  # blank line or comment
        parsed = series_seen.get(series)
        if parsed is None:
            parsed = series_seen[series] = _series(series, line_number)
        fields = _fields(m.group("fields"), line_number)
        points += len(fields)
        if points > points_max:
            raise TooManyPoints(
                f"A request may carry at most {points_max:,} points (fields); this one has more."
                " Send it in smaller batches."
            )
        raw_time = m.group("ts")
        timestamp = None
        if raw_time is not None:
            timestamp = int(raw_time) * scale
            if not INT64_MIN <= timestamp <= INT64_MAX:
                raise LineSyntaxError(
                    line_number,
                    f"timestamp {raw_time[:40]} is out of range for precision {precision}",
                )
        lines.append(Line(line_number, parsed[0], parsed[1], fields, timestamp))
    return lines


def _series(series: str, number: int) -> tuple[str, tuple[tuple[str, str], ...]]:
    measurement_end = _MEASUREMENT_RE.match(series).end()  # type: ignore[union-attr]
    measurement = _unescape(series[:measurement_end], _MEASUREMENT_ESCAPE)
    tags = tuple(
        (_unescape(key, _KEY_ESCAPE), _unescape(value, _KEY_ESCAPE))
        for key, value in _TAG_RE.findall(series, measurement_end)
    )
    if len({key for key, _ in tags}) != len(tags):
        keys = [key for key, _ in tags]
        duplicate = next(key for key in keys if keys.count(key) > 1)
        raise LineSyntaxError(number, f"tag key {quoted(duplicate)} appears twice")
    return measurement, tags


def _fields(text: str, number: int) -> tuple[Field, ...]:
    """The fields of a line the grammar has matched (so each one is well formed)."""
    if '"' not in text and "\\" not in text:
        # No string and no escape: splitting at commas and the first "=" is exact, and the first
        # and last characters tell the type. Several times faster than the regular expression.
        fields = []
        for item in text.split(","):
            key, _, raw = item.partition("=")
            last = raw[-1]
            if last == "i":
                fields.append(_typed(key, "integer", raw[:-1], number))
            elif last == "u":
                fields.append(_typed(key, "unsigned", raw[:-1], number))
            elif raw[0] in "tTfF":
                fields.append(Field(key, "boolean", raw in _TRUE))
            else:
                fields.append(_typed(key, "float", raw, number))
    else:
        fields = []
        for raw_key, string, integer, unsigned, float_, boolean in _FIELD_RE.findall(text):
            # Exactly one value group is non-empty (a string's holds its quotes, so "" too).
            key = _unescape(raw_key, _KEY_ESCAPE)
            if float_:
                fields.append(_typed(key, "float", float_, number))
            elif integer:
                fields.append(_typed(key, "integer", integer, number))
            elif unsigned:
                fields.append(_typed(key, "unsigned", unsigned, number))
            elif boolean:
                fields.append(Field(key, "boolean", boolean in _TRUE))
            else:
                fields.append(Field(key, "string", _unescape(string[1:-1], _STRING_ESCAPE)))
    if len(fields) > 1 and len({f.key for f in fields}) != len(fields):
        keys = [f.key for f in fields]
        duplicate = next(key for key in keys if keys.count(key) > 1)
        raise LineSyntaxError(number, f"field key {quoted(duplicate)} appears twice")
    return tuple(fields)


def _typed(key: str, kind: str, raw: str, number: int) -> Field:
    """A numeric field, refused (as InfluxDB does) when it is out of its type's range."""
    if kind == "float":
        value: float | int = float(raw)
        ok = math.isfinite(value)
        shown = raw
    else:
        value = int(raw)
        ok = INT64_MIN <= value <= INT64_MAX if kind == "integer" else value <= UINT64_MAX
        shown = raw + kind[0]
    if not ok:
        raise LineSyntaxError(number, f"{kind} {shown[:40]} of field {quoted(key)} is out of range")
    return Field(key, kind, value)


# --- diagnosis of a bad line -------------------------------------------------------------------

_KEY_RE = re.compile(_KEY)
_STRING_RE = re.compile(_STRING)
_BARE_VALUE_RE = re.compile(r"[^ ,\r\n]*")
_NUMBER_OR_BOOL_RE = re.compile(rf"(?:-?\d+i|\d+u|{_FLOAT}|{_BOOL})\Z")
_TIMESTAMP_RE = re.compile(r"-?\d+")
_CONTROL_RE = re.compile(rf"[{_NP}]")


def _found(line: str, pos: int) -> str:
    """What stands at `pos` of a line, for a message."""
    if pos >= len(line):
        return "the end of the line"
    char = line[pos]
    if char == "\\":
        return "a backslash that escapes nothing (it must precede a printable character)"
    if char == "\r":
        return "a carriage return not followed by a newline"
    if _CONTROL_RE.match(char):
        return f"the control character U+{ord(char):04X}"
    return repr(char)


def _diagnose(text: str, start: int) -> str:
    """Say what is wrong with the line starting at `start`, which the grammar refused."""
    newline = text.find("\n", start)
    line = text[start : len(text) if newline < 0 else newline]
    if line.endswith("\r"):
        line = line[:-1]
    pos = len(line) - len(line.lstrip(" "))

    def at(where: int, message: str) -> str:
        return f"{message} at column {where + 1}"

    if line.startswith("#", pos):
        bad = _CONTROL_RE.search(line, pos)
        where = bad.start() if bad else pos
        return at(where, f"the comment holds {_found(line, where)}")
    m = _MEASUREMENT_RE.match(line, pos)
    if m is None:
        if pos == len(line):
            return "the line has spaces only where a measurement should start"
        return at(pos, f"expected a measurement, found {_found(line, pos)}")
    pos = m.end()
    while pos < len(line) and line[pos] == ",":
        key = _KEY_RE.match(line, pos + 1)
        if key is None:
            return at(pos + 1, "expected a tag key after ','")
        pos = key.end()
        if pos >= len(line) or line[pos] != "=":
            return at(
                pos, f"expected '=' after tag key {quoted(key.group())}, found {_found(line, pos)}"
            )
        value = _KEY_RE.match(line, pos + 1)
        if value is None:
            return at(pos + 1, f"tag {quoted(key.group())} has no value")
        pos = value.end()
    if pos >= len(line):
        return "the point has no fields (a measurement needs at least one field after a space)"
    if line[pos] != " ":
        return at(pos, f"expected a space before the fields, found {_found(line, pos)}")
    pos = len(line) - len(line[pos:].lstrip(" "))
    if pos >= len(line):
        return "the point has no fields (a measurement needs at least one field after a space)"
    while True:
        key = _KEY_RE.match(line, pos)
        if key is None:
            return at(pos, f"expected a field key, found {_found(line, pos)}")
        pos = key.end()
        name = quoted(key.group())
        if pos >= len(line) or line[pos] != "=":
            return at(pos, f"expected '=' after field key {name}, found {_found(line, pos)}")
        pos += 1
        if line.startswith('"', pos):
            string = _STRING_RE.match(text, start + pos)
            if string is None:
                return at(pos, f"the string value of field {name} has no closing quote")
            # A string may span lines: the rest of the point is read from the whole body.
            tail_start = string.end()
            rest_end = text.find("\n", tail_start)
            line = line[:pos] + text[start + pos : len(text) if rest_end < 0 else rest_end]
            line = line.removesuffix("\r")
            pos = tail_start - start
        else:
            value = _BARE_VALUE_RE.match(line, pos).group()  # type: ignore[union-attr]
            if not value:
                return at(pos, f"field {name} has no value")
            if not _NUMBER_OR_BOOL_RE.match(value):
                return at(
                    pos,
                    f"invalid value {quoted(value)} for field {name} (a float, an integer "
                    "like 1i, an unsigned like 1u, a boolean or a quoted string)",
                )
            pos += len(value)
        if pos < len(line) and line[pos] == ",":
            pos += 1
            continue
        break
    if pos >= len(line):
        return "the line does not parse"  # unreachable in practice: the grammar would match
    if line[pos] != " ":
        return at(pos, f"expected ',' or a space after a field, found {_found(line, pos)}")
    pos = len(line) - len(line[pos:].lstrip(" "))
    if pos < len(line):
        stamp = _TIMESTAMP_RE.match(line, pos)
        after = stamp.end() if stamp else pos
        if stamp is None or (after < len(line) and line[after] != " "):
            token = line[pos:].split(" ", 1)[0]
            return at(pos, f"invalid timestamp {quoted(token)} (an integer)")
        rest = line[after:].lstrip(" ")
        if rest:
            return at(len(line) - len(rest), f"unexpected text after the timestamp: {quoted(rest)}")
    return "the line does not parse"


__all__ = [
    "POINTS_MAX",
    "PRECISIONS",
    "Field",
    "Line",
    "LineSyntaxError",
    "TooManyPoints",
    "lines_parse",
    "quoted",
]
