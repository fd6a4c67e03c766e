"""The house read top-down: imports only run downward, no circles, small modules and functions.

The order (README, "Project layout"): errors -> infra -> judge -> labels -> rewards -> watch ->
defenses -> tune -> corpus -> steer -> experiment / serve / verl -> display / config_reference /
cli. A file may import its own package and any package below it, never one above. The graph is
read from the source with `ast`: every import counts, lazy ones inside functions and
`TYPE_CHECKING` ones included, since each is a dependency a reader must follow.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "tether"

# floor of each top-level part of the package; equal floors may not import each other
FLOORS = {
    "errors": 0,
    "_moved": 0,
    "infra": 1,
    "judge": 2,
    "labels": 3,
    "rewards": 4,
    "watch": 5,
    "defenses": 6,
    "tune": 7,
    "corpus": 8,
    "steer": 9,
    "experiment": 10,
    "serve": 10,
    "deploy": 10,
    "verl": 10,
    "display": 11,
    "config_reference": 11,
    "cli": 12,
    "__init__": 13,
}
ALLOWED_UPWARD: set[tuple[str, str]] = set()  # (importer module, imported module): none today

# Debts, each capped at today's size so it can only shrink (the target is 300 lines a module,
# 60 a function): remove an entry when its file or function is split.
MODULE_LINES, FUNCTION_LINES = 300, 60
LONG_MODULES = {"judge/evaluator.py": 323}
LONG_FUNCTIONS: dict[str, int] = {}


def part_of(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "__init__"
    return "cli" if parts[1].startswith("cli") else parts[1]


def module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> list[tuple[str, int]]:
    """(imported tether module, line) for every import in the file, relative ones resolved."""
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # `from tether.x import y` may name a submodule y: count it as the module it is
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.append((sub if module_path(sub) else target, node.lineno))
    return [(m, line) for m, line in found if m == "tether" or m.startswith("tether.")]


def module_path(module: str) -> Path | None:
    base = SRC.parent.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def graph() -> dict[str, list[tuple[str, int]]]:
    return {
        module_name(p): [(m, line) for m, line in imports_of(p) if module_path(m)] for p in sorted(SRC.rglob("*.py"))
    }


def test_every_part_has_a_floor():
    parts = {part_of(m) for m in graph()}
    assert parts <= set(FLOORS), f"give these parts a floor in FLOORS and the README's layout: {parts - set(FLOORS)}"


def test_imports_only_run_downward():
    upward = []
    for importer, targets in graph().items():
        for target, line in targets:
            a, b = part_of(importer), part_of(target)
            if a != b and FLOORS[a] <= FLOORS[b] and (importer, target) not in ALLOWED_UPWARD:
                upward.append(f"{importer}:{line} imports {target} ({a} is floor {FLOORS[a]}, {b} is {FLOORS[b]})")
    assert not upward, "imports that run back up:\n" + "\n".join(upward)


def test_no_module_imports_itself_in_a_circle():
    edges = {m: {t for t, _ in ts if t != m} for m, ts in graph().items()}
    circles, index, low, stack, on, counter = [], {}, {}, [], set(), [0]

    def strongconnect(v):  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in list(edges):
        if v not in index:
            strongconnect(v)
    # a package's __init__ that hands on its modules' names lazily is no circle; none imports eagerly here
    assert not circles, f"modules that import each other in a circle: {circles}"


def _lines():
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        source = path.read_text(encoding="utf-8")
        yield rel, source


def test_modules_and_functions_stay_small():
    problems = []
    for rel, source in _lines():
        n = len(source.splitlines())
        cap = LONG_MODULES.get(rel, MODULE_LINES)
        if n > cap:
            problems.append(f"{rel}: {n} lines (at most {cap})")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                cap = LONG_FUNCTIONS.get(f"{rel}:{node.name}", FUNCTION_LINES)
                if length > cap:
                    problems.append(f"{rel}:{node.name}: {length} lines (at most {cap})")
    assert not problems, "split these:\n" + "\n".join(problems)


@pytest.mark.parametrize("debt", [*LONG_MODULES, *LONG_FUNCTIONS])
def test_a_paid_debt_leaves_the_list(debt):
    """A file or function split under the target must leave LONG_*, so the list stays true."""
    rel, _, name = debt.partition(":")
    source = (SRC / rel).read_text(encoding="utf-8")
    if not name:
        assert len(source.splitlines()) > MODULE_LINES, (
            f"{rel} is within {MODULE_LINES} lines now: drop it from LONG_MODULES"
        )
        return
    lengths = [
        n.end_lineno - n.lineno + 1
        for n in ast.walk(ast.parse(source))
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == name
    ]
    assert lengths and max(lengths) > FUNCTION_LINES, f"{debt} is within {FUNCTION_LINES} lines now: drop it"
