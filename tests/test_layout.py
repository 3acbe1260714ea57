"""The tree shows the architecture: rooms by role, imports only downwards, no cycles.

Every import of a `bounceback` module counts here, also those under
``TYPE_CHECKING`` and those inside functions: a cycle that only the type checker sees
is still a tangle a newcomer has to read through.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import bounceback
import pytest

PACKAGE = Path(bounceback.__file__).resolve().parent

# Lowest first: a room may import itself and the rooms before it, never those after.
# `logs` (log context and format) sits below everything; `ops` (CLI, stats, metrics)
# on top of everything.
ROOMS = ["logs", "config", "core", "smpp", "store", "feed", "analysis", "admin", "gateway", "ops"]
# The pure core: the engine's decisions take the time as an argument and do no I/O.
SANS_IO = {"asyncio", "socket", "selectors", "ssl", "time", "threading", "subprocess"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(["bounceback", *parts])


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(name: str) -> Iterator[tuple[str, int]]:
    """(imported module, line) for every import in the module, at any depth."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                mod = ".".join([*base, node.module] if node.module else base)
            else:
                mod = node.module or ""
            # `from bounceback.feed import events` imports the module bounceback.feed.events
            for alias in node.names:
                sub = f"{mod}.{alias.name}"
                yield (sub if sub in MODULES else mod), node.lineno


def internal(name: str) -> list[tuple[str, int]]:
    return [(m, line) for m, line in imports(name) if m in MODULES and m != name]


def room(name: str) -> str | None:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else None


def test_every_module_lives_in_a_room() -> None:
    stray = [
        n
        for n in MODULES
        if room(n) not in ROOMS and n not in ("bounceback", "bounceback.__main__")
    ]
    assert stray == []
    for r in ROOMS:
        assert f"bounceback.{r}" in MODULES, f"room {r} is missing"


def test_rooms_import_only_downwards() -> None:
    wrong = []
    for name in MODULES:
        mine = room(name)
        if mine not in ROOMS:  # the package itself and __main__ may import anything
            continue
        for target, line in internal(name):
            theirs = room(target)
            if theirs is None:
                if target != "bounceback":
                    wrong.append(f"{name}:{line} imports {target}")
                continue
            if ROOMS.index(theirs) > ROOMS.index(mine):
                wrong.append(f"{name}:{line} imports {target} ({mine} below {theirs})")
    assert wrong == []


def test_no_import_cycles() -> None:
    graph = {n: sorted({t for t, _ in internal(n)}) for n in MODULES}
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                cycles.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node)
    assert cycles == [], "\n".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize("name", sorted(n for n in MODULES if room(n) == "core"))
def test_core_does_no_io(name: str) -> None:
    used = {m.split(".")[0] for m, _ in imports(name)}
    assert used & SANS_IO == set()


def test_the_cycle_check_sees_type_only_and_function_imports(tmp_path: Path) -> None:
    """The checks above would be empty promises if `imports` missed the kinds of import
    that cycles hide in."""
    found = {m for m, _ in imports("bounceback.ops.cli")}
    assert "bounceback.gateway.shell" in found  # imported inside a function
    kinds = {m for m, _ in imports("bounceback.config.extras")}
    assert "bounceback.config.settings" in kinds  # under TYPE_CHECKING


def test_every_room_is_in_the_readme_layout() -> None:
    readme = (PACKAGE.parent / "README.md").read_text()
    section = readme.split("## Layout", 1)[1].split("\n## ", 1)[0]
    for r in ROOMS:
        where = f"`proxy/{r}.py`" if r == "logs" else f"`proxy/{r}/`"
        assert where in section, f"README Layout has no line for {where}"
