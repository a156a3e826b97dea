"""The bench package: every script starts as `python -m bench.<name>` (as the Makefile runs it),
imports library modules only, never another script, and patches no `sys.path`."""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest

from bench._common import ROOT

BENCH = ROOT / "bench"
# The bare reference app and its settings are served by gunicorn, not run.
SERVED = {"bare_app", "bare_settings"}
SCRIPTS = sorted(
    path.stem
    for path in BENCH.glob("*.py")
    if not path.stem.startswith("_") and path.stem not in SERVED
)
LIBRARIES = sorted(path.stem for path in BENCH.glob("_*.py") if path.stem != "__init__")


def _bench_imports(name: str) -> set[str]:
    """The bench modules `bench/<name>.py` imports, by name."""
    tree = ast.parse((BENCH / f"{name}.py").read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "bench":
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("bench."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("bench.")}
    return found


def test_the_scripts_and_libraries_are_found():
    assert {"ingest", "async_ingest", "loadtest", "soak", "query", "explore"} <= set(SCRIPTS)
    assert {"_common", "_loads", "_runners", "_options", "_workers", "_tallies"} <= set(LIBRARIES)


@pytest.mark.parametrize("name", SCRIPTS + LIBRARIES)
def test_bench_modules_import_libraries_only_and_leave_sys_path_alone(name):
    imported = _bench_imports(name)
    assert all(module.startswith("_") for module in imported), (name, imported)
    assert "sys.path" not in (BENCH / f"{name}.py").read_text()


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_script_starts_as_a_module(name):
    # profiles takes a positional kind before its options.
    args = ["single", "--help"] if name == "profiles" else ["--help"]
    result = subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", f"bench.{name}", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("usage: ")
