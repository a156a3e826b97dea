"""Assertion messages for fault tests: every promise that broke, with a few examples each."""

from __future__ import annotations

import pytest

from .harness import PgCluster
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

    def healthz_check(self, lo: float, hi: float, promise: str, during: str = "") -> None:
        """`promise`: /healthz answered 200 to every probe that started between `lo` and `hi`,
        and at least one did start then."""
        health = [p for p in self.ledger.probes if lo < p.started < hi]
        sick = [p for p in health if p.status != 200]
        self.check(
            health and not sick,
            f"{promise}: {len(sick)} of {len(health)} probes{during} failed, e.g. "
            f"{sick[0].describe() if sick else 'no probe ran'}",
        )

    def assert_kept_with_exact_ledger(self, pg: PgCluster, *, settle: float = 60.0) -> None:
        """Check the ledger against the database (`settle`: seconds its writes may take to land),
        then fail with every promise broken."""
        with pg.connect() as conn:
            self.ledger_exact(self.ledger.problems(conn, settle=settle))
        self.assert_kept()

    def assert_kept(self) -> None:
        if self.broken:
            pytest.fail(
                f"{len(self.broken)} promise(s) broken:\n- "
                + "\n- ".join(self.broken)
                + f"\nall attempts: {self.ledger.summary()}",
                pytrace=False,
            )
