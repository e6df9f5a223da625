"""The package's layering, read from its source: the library never imports the paper, nothing imports in a
circle, and no module grows past 600 lines."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "snncka"
MAX_LINES = 600


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _resolve(module: str, is_package: bool, level: int, target: str | None) -> str:
    base = module.split(".") if is_package else module.split(".")[:-1]
    if level:
        base = base[: len(base) - (level - 1)] if level > 1 else base
        return ".".join([*base, target] if target else base)
    return target or ""


def _known(name: str) -> str | None:
    """The snncka module ``name`` refers to (a module, or the package holding an imported name)."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def imports_of(module: str) -> set[str]:
    """Every snncka module ``module`` imports, at module level or inside functions (``TYPE_CHECKING`` blocks
    included: they must not form cycles either)."""
    path = MODULES[module]
    is_package = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, is_package, node.level, node.module)
            names = [f"{base}.{a.name}" if base else a.name for a in node.names]
        else:
            continue
        for n in names:
            hit = _known(n)
            if hit and hit != module:
                out.add(hit)
    return out


GRAPH = {m: imports_of(m) for m in MODULES}


def _is_paper(m: str) -> bool:
    return m == "snncka.paper" or m.startswith("snncka.paper.")


def _is_top(m: str) -> bool:
    return _is_paper(m) or m == "snncka.cli" or m.startswith("snncka.cli.")


def test_the_graph_is_read() -> None:
    assert "snncka.runner" in GRAPH["snncka.cli.reproduce"]
    assert "snncka.registry" in GRAPH["snncka.models"]
    assert "snncka.analyses" in GRAPH["snncka.paper.findings"]
    assert "snncka.analyses.compare_analysis" in GRAPH["snncka.analyses.blocks_analysis"]


def test_the_library_never_imports_the_paper_or_the_cli() -> None:
    bad = sorted(f"{m} -> {t}" for m, ts in GRAPH.items() if not _is_top(m) for t in ts if _is_top(t))
    assert bad == []


def _cycle_from(start: str) -> list[str] | None:
    """A shortest import path from ``start`` back to itself, or None."""
    frontier = [[start]]
    seen = {start}
    while frontier:
        nxt = []
        for path in frontier:
            for t in sorted(GRAPH[path[-1]]):
                if t == start:
                    return [*path, t]
                if t not in seen:
                    seen.add(t)
                    nxt.append([*path, t])
        frontier = nxt
    return None


def _ancestors(m: str) -> set[str]:
    parts = m.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))}


def test_no_import_cycles() -> None:
    # a package importing its own submodules (to re-export them) is no cycle; every other loop is
    cycles = []
    for m in MODULES:
        path = _cycle_from(m)
        if path is None:
            continue
        edges = list(zip(path, path[1:], strict=False))
        if not all(a in _ancestors(b) or b in _ancestors(a) for a, b in edges):
            cycles.append(" -> ".join(path))
    assert cycles == []


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_is_over_600_lines(module: str) -> None:
    lines = len(MODULES[module].read_text().splitlines())
    assert lines <= MAX_LINES, f"{module}: {lines} lines"
