"""Running a benchmark script for real, as `make bench-*`, `make loadtest` and `make soak` do:
`python -m bench.<name>` from the repository root, in this test run's environment."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable

import pytest

from bench._common import ROOT


@pytest.fixture
def run_bench() -> Callable[..., subprocess.CompletedProcess]:
    def run(
        script: str, *args: str, timeout: float, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess:
        return subprocess.run(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", f"bench.{script}", *args],
            env={**os.environ, **(env or {})},
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    return run


@pytest.fixture
def figure() -> Callable[[str, str], float]:
    """The number a pattern's first group matches in a script's output (thousands commas)."""

    def read(pattern: str, text: str) -> float:
        found = re.search(pattern, text)
        assert found, f"no match for {pattern!r} in:\n{text[-3000:]}"
        return float(found.group(1).replace(",", ""))

    return read
