"""The examples of docs/API.md, read from the Markdown.

An example is a fenced block whose info string is `<language> example` (bash, python, js or
php). Its expected output is the next ```` ```text output ```` block of the same section: that
block applies to every example written since the previous output block, so the four languages
of one example share it and must print the same lines. A section is the text under the nearest
heading of level 3 or deeper (`###`, `####`); blocks without the `example` marker (configuration
snippets) are never run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

LANGUAGES = ("bash", "python", "js", "php")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_FENCE = re.compile(r"^```(.*)$")


@dataclass
class Example:
    chapter: str
    section: str
    language: str
    code: str
    line: int  # where the block starts in the file, 1-based
    expected: list[str] = field(default_factory=list)

    @property
    def id(self) -> str:
        return f"{slug(self.section)}-{self.language}"


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def files_read(path: Path) -> dict[str, str]:
    """The guide's helper files: blocks whose info string is `<language> file=<name>`; each is
    written beside every example, which uses it as a reader would (`require 'gf.php'`)."""
    files = {}
    lines = path.read_text().splitlines()
    for index, line in enumerate(lines):
        fence = _FENCE.match(line)
        info = fence.group(1).split() if fence else []
        if len(info) >= 2 and info[1].startswith("file="):
            end = index + 1
            while lines[end].rstrip() != "```":
                end += 1
            files[info[1].removeprefix("file=")] = "\n".join(lines[index + 1 : end]) + "\n"
    return files


def examples_read(path: Path) -> list[Example]:
    """Every example of the guide in document order, each with its expected output lines.

    Raises ValueError for a malformed guide: an example without an output block after it in its
    section, an output block with no example before it, or two examples with the same id."""
    examples: list[Example] = []
    pending: list[Example] = []
    chapter = section = ""
    lines = path.read_text().splitlines()
    index = 0

    def close_section() -> None:
        if pending:
            where = ", ".join(f"line {e.line}" for e in pending)
            raise ValueError(f"{path.name}: no ```text output block after the example at {where}")

    while index < len(lines):
        line = lines[index]
        heading = _HEADING.match(line)
        if heading and len(heading.group(1)) >= 2:
            close_section()
            if len(heading.group(1)) == 2:
                chapter = section = heading.group(2)
            else:
                section = heading.group(2)
            index += 1
            continue
        fence = _FENCE.match(line)
        if not fence:
            index += 1
            continue
        info = fence.group(1).split()
        start = index + 1
        end = start
        while end < len(lines) and lines[end].rstrip() != "```":
            end += 1
        body = "\n".join(lines[start:end]) + "\n"
        index = end + 1
        if len(info) >= 2 and info[1] == "example":
            if info[0] not in LANGUAGES:
                raise ValueError(f"{path.name}:{start}: unknown example language {info[0]!r}")
            example = Example(
                chapter=chapter, section=section, language=info[0], code=body, line=start
            )
            pending.append(example)
            examples.append(example)
        elif info[:2] == ["text", "output"]:
            if not pending:
                raise ValueError(f"{path.name}:{start}: an output block with no example before it")
            expected = [text.rstrip() for text in lines[start:end] if text.strip()]
            for example in pending:
                example.expected = expected
            pending = []
    close_section()
    ids = [e.id for e in examples]
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    if repeated:
        raise ValueError(
            f"{path.name}: examples named twice (same section and language): {repeated}"
        )
    return examples


def missing_lines(expected: list[str], stdout: str) -> list[str]:
    """The expected lines not found, in order, among the lines of `stdout` (others may be
    printed between them)."""
    printed = [line.rstrip() for line in stdout.splitlines()]
    position = 0
    missing = []
    for want in expected:
        try:
            position = printed.index(want, position) + 1
        except ValueError:
            missing.append(want)
    return missing
