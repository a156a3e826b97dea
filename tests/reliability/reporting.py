"""Assertion messages for fault tests: every promise that broke, with a few examples each."""

from __future__ import annotations

import pytest

from .ledger import Ledger

SHOWN = 12


class Promises:
    """Collects broken promises so one run of a slow test reports all of them, not the first."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.broken: list[str] = []

    def check(self, kept: object, message: str) -> None:
        if not kept:
            self.broken.append(message)

    def ledger_exact(self, problems: list[str]) -> None:
        if problems:
            shown = problems[:SHOWN]
            more = [f"  … and {len(problems) - SHOWN} more"] if len(problems) > SHOWN else []
            self.broken.append(
                "\n".join(
                    [f"the ledger is not exact ({len(problems)} write(s)):"]
                    + [f"  {p}" for p in shown]
                    + more
                )
            )

    def assert_kept(self) -> None:
        if self.broken:
            pytest.fail(
                f"{len(self.broken)} promise(s) broken:\n- "
                + "\n- ".join(self.broken)
                + f"\nall attempts: {self.ledger.summary()}",
                pytrace=False,
            )
