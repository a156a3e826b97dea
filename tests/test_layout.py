"""The import graph of the project's own modules: no circle, and arrows that point down.

Every module of glowing_fiesta/ and of each app (a top-level folder with an apps.py) is parsed
with `ast`, never imported, so the graph holds every import a module can make: at module level,
inside functions and under `if TYPE_CHECKING`. Relative imports are resolved against the
module's package. `from package import name` is an arrow to the submodule `package.name` when
there is one, else to the package's __init__; importing a submodule is not counted as an import
of its parent packages (as grimp and import-linter count it).

Two rules:

- no import circle among the project's modules, whatever the depth;
- glowing_fiesta/ is the ground floor: none of its modules imports an app, except urls.py and
  celery.py, whose job is to name the apps.
"""

from __future__ import annotations

import ast
import itertools
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GROUND = "glowing_fiesta"
# The modules of the ground floor whose job is to name the apps: the routes and the Celery app.
WIRING = frozenset({"glowing_fiesta.urls", "glowing_fiesta.celery"})
NOT_PROJECT = frozenset({"tests", "bench"})

# Arrows from glowing_fiesta/ to an app that remain for now, as (importer, imported): each one
# names the module that still has to move or be inverted. Empty when the layout is done.
KNOWN_GROUND_FLOOR_ARROWS: dict[tuple[str, str], str] = {}


def app_packages() -> list[str]:
    """Every top-level folder that holds an apps.py, the ground floor excepted."""
    return sorted(
        path.parent.name
        for path in ROOT.glob("*/apps.py")
        if path.parent.name != GROUND and path.parent.name not in NOT_PROJECT
    )


def project_modules() -> dict[str, Path]:
    """{dotted module name: file} for every module of the project's packages, migrations aside."""
    modules = {}
    for package in (GROUND, *app_packages()):
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if "migrations" in parts:
                continue
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


def _resolve(name: str, modules: dict[str, Path]) -> str:
    """The deepest project module a dotted name names ("" for none): `import x.y.z` loads
    x.y.z, `from x.y import Name` with Name a class loads x.y."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name


def arrows_of(module: str, path: Path, modules: dict[str, Path]) -> dict[str, int]:
    """{imported project module: first line} of every import in the file, wherever it stands,
    relative ones made absolute against the module's package."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    arrows: dict[str, int] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [_resolve(alias.name, modules) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join([*parts, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            # `from x import a`: the submodule x.a when there is one, else x itself.
            targets = [
                f"{base}.{alias.name}"
                if f"{base}.{alias.name}" in modules
                else _resolve(base, modules)
                for alias in node.names
            ]
        else:
            continue
        for target in targets:
            if target and target != module:
                arrows[target] = min(arrows.get(target, node.lineno), node.lineno)
    return arrows


def import_graph() -> dict[str, dict[str, int]]:
    """{importer: {imported: first line}} over the project's modules only."""
    modules = project_modules()
    return {module: arrows_of(module, path, modules) for module, path in modules.items()}


def strongly_connected(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one module (or a self-arrow)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        # Iterative, so a deep graph never meets the recursion limit.
        work = [(node, iter(sorted(graph[node])))]
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        while work:
            current, successors = work[-1]
            for nxt in successors:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                    break
                if nxt in on_stack:
                    low[current] = min(low[current], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[current])
                if low[current] == index[current]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == current:
                            break
                    if len(component) > 1 or current in graph[current]:
                        found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def a_cycle(graph: dict[str, dict[str, int]], component: list[str]) -> list[str]:
    """One circle through the component's first module, by breadth-first search: the shortest
    way back to where it started."""
    members = set(component)
    start = component[0]
    came_from: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for nxt in sorted(graph[node]):
                if nxt not in members:
                    continue
                if nxt == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(came_from[path[-1]])
                    return [*reversed(path), start]
                if nxt not in came_from:
                    came_from[nxt] = node
                    following.append(nxt)
        frontier = following
    return component


def describe(graph: dict[str, dict[str, int]], cycle: list[str]) -> str:
    return (
        " -> ".join(f"{a} (line {graph[a][b]})" for a, b in itertools.pairwise(cycle))
        + f" -> {cycle[-1]}"
    )


def test_the_project_has_its_packages():
    modules = project_modules()
    for package in (GROUND, "apikeys", "idempotency", "metrics", "retention", "selfmetrics"):
        assert package in modules, package
    assert not any(name.startswith(("tests", "bench")) for name in modules)
    assert not any(".migrations" in name for name in modules)


def test_no_import_circle_among_the_project_modules():
    graph = import_graph()
    circles = [
        f"{len(component)} modules ({', '.join(component)}), for example "
        + describe(graph, a_cycle(graph, component))
        for component in strongly_connected(graph)
    ]
    assert not circles, "import circles:\n" + "\n".join(circles)


def test_the_ground_floor_imports_no_app():
    graph = import_graph()
    apps = tuple(app_packages())
    arrows = {
        (importer, imported): line
        for importer, targets in graph.items()
        if importer.partition(".")[0] == GROUND and importer not in WIRING
        for imported, line in targets.items()
        if imported.partition(".")[0] in apps
    }
    unexpected = sorted(set(arrows) - set(KNOWN_GROUND_FLOOR_ARROWS))
    assert not unexpected, "glowing_fiesta/ imports an app:\n" + "\n".join(
        f"{importer} (line {arrows[importer, imported]}) -> {imported}"
        for importer, imported in unexpected
    )
    gone = sorted(set(KNOWN_GROUND_FLOOR_ARROWS) - set(arrows))
    assert not gone, f"no longer there, take them out of KNOWN_GROUND_FLOOR_ARROWS: {gone}"


# The checker checks itself on small graphs, so that a passing run means what it says.


def test_a_circle_of_three_is_found_and_named():
    graph = {"a": {"b": 1}, "b": {"c": 2}, "c": {"a": 3}, "d": {"a": 4}}
    assert strongly_connected(graph) == [["a", "b", "c"]]
    assert describe(graph, a_cycle(graph, ["a", "b", "c"])) == (
        "a (line 1) -> b (line 2) -> c (line 3) -> a"
    )


def test_a_chain_is_no_circle():
    assert strongly_connected({"a": {"b": 1}, "b": {"c": 1}, "c": {}}) == []


@pytest.mark.parametrize(
    ("source", "module", "expected"),
    [
        ("from . import figures", "glowing_fiesta.monitoring.record", "glowing_fiesta.monitoring.figures"),
        ("from .figures import X", "glowing_fiesta.monitoring.record", "glowing_fiesta.monitoring.figures"),
        ("from .. import failopen", "glowing_fiesta.monitoring.record", "glowing_fiesta.failopen"),
        ("from . import record", "glowing_fiesta.monitoring", "glowing_fiesta.monitoring.record"),
        ("def f():\n    from metrics.services import x", "glowing_fiesta.monitoring.record", "metrics.services"),
        ("from glowing_fiesta import monitoring", "metrics.services", "glowing_fiesta.monitoring"),
        ("import metrics.models", "glowing_fiesta.urls", "metrics.models"),
    ],
)  # fmt: skip
def test_imports_resolve_to_the_module_they_load(tmp_path, source, module, expected):
    path = tmp_path / ("__init__.py" if module == "glowing_fiesta.monitoring" else "m.py")
    path.write_text(source + "\n")
    assert expected in arrows_of(module, path, project_modules())
