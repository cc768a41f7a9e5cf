"""The layer rules of DESIGN.md, checked by a real tool: import-linter's contracts in .importlinter (the engine and the
models know no face and no web framework, the models sit below the engine, the UI and the API do not import each
other, no cycles between sibling packages), and no import cycle between any two modules under modules/."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grimp

from tests.support import ROOT

LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")  # the venv's console script, beside its python


def test_import_linter_contracts_are_kept():
    assert LINT_IMPORTS.is_file(), f"{LINT_IMPORTS} is missing: install requirements.txt (import-linter) into the venv"
    out = subprocess.run([str(LINT_IMPORTS), "--no-cache", str(ROOT / ".importlinter")],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, f"lint-imports failed (exit {out.returncode}):\n{out.stdout}\n{out.stderr}"


def import_cycles(graph: grimp.ImportGraph, package: str) -> list[list[str]]:
    """The groups of modules under `package` that import each other (directly or through others): the strongly
    connected components of the import graph with more than one module (Tarjan's algorithm, iterative)."""
    modules = sorted(graph.modules)
    edges = {m: sorted(i for i in graph.find_modules_directly_imported_by(m) if i.split(".")[0] == package)
             for m in modules}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    for root in modules:
        if root in index:
            continue
        work = [(root, iter(edges[root]))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(edges[child])))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    groups.append(sorted(group))
    return sorted(groups)


def test_no_import_cycles_between_modules():
    graph = grimp.build_graph("modules", cache_dir=None)
    cycles = import_cycles(graph, "modules")
    report = []
    for group in cycles:
        a, b = group[0], group[1]
        there, back = graph.find_shortest_chain(a, b), graph.find_shortest_chain(b, a)
        report.append(f"{', '.join(group)}\n    {' -> '.join(there or ())}\n    {' -> '.join(back or ())}")
    assert not cycles, "modules that import each other:\n" + "\n".join(report)


def test_the_cycle_finder_finds_a_cycle():
    graph = grimp.ImportGraph()
    for name in ("pkg", "pkg.a", "pkg.b", "pkg.c", "pkg.d"):
        graph.add_module(name)
    for importer, imported in (("pkg.a", "pkg.b"), ("pkg.b", "pkg.c"), ("pkg.c", "pkg.a"), ("pkg.d", "pkg.a")):
        graph.add_import(importer=importer, imported=imported)
    assert import_cycles(graph, "pkg") == [["pkg.a", "pkg.b", "pkg.c"]]
