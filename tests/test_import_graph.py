"""The import graph of `paretorl` has no cycle.

Read from the sources with `ast`, not by importing them: every `import` and `from ... import`
of a paretorl module counts, at module level and inside functions alike (a function-local import
hides a cycle from Python's loader, not from a reader). The sources checked are those of the
`paretorl` that Python imports, so `PYTHONPATH=<checkout>/platform` checks that checkout.
"""

from __future__ import annotations

import ast
from pathlib import Path

import paretorl

ROOT = Path(paretorl.__file__).resolve().parent


def module_names(root: Path) -> dict[str, Path]:
    """Dotted name -> source file of every module and package under `root` (a package folder)."""
    names = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _imported(node: ast.AST, module: str, is_package: bool) -> list[str]:
    """The dotted names an import statement may load: `a.b` for `import a.b`; for
    `from a import b`, both `a.b` (if b is a module) and `a`."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:  # relative: from the module's own package (or the package itself)
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module
    return [target, *(f"{target}.{alias.name}" for alias in node.names)]


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """module -> the paretorl modules it imports (the deepest module each import names)."""
    names = module_names(root)
    graph: dict[str, set[str]] = {name: set() for name in names}
    for name, path in names.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            candidates = _imported(node, name, is_package)
            if isinstance(node, ast.ImportFrom):
                submodules = [c for c in candidates[1:] if c in names]
                targets = submodules or [candidates[0]]
            else:
                targets = candidates
            for target in targets:
                while target and target not in names:  # `import paretorl.x.y` of a name y: its module
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as [a, b, ..., a], or None. Depth-first, nodes and edges in sorted order."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_find_cycle_names_a_cycle_and_accepts_a_layered_graph():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"top": {"mid", "low"}, "mid": {"low"}, "low": set()}) is None


def test_import_graph_reads_function_level_and_relative_imports(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "a.py").write_text("def f():\n    from pkg.sub import b\n")
    (pkg / "sub" / "b.py").write_text("from . import c\n")
    (pkg / "sub" / "c.py").write_text("import pkg.sub.a as a\nfrom pkg.sub.a import f\n")
    graph = import_graph(pkg)
    assert graph["pkg.sub.a"] == {"pkg.sub.b"} and graph["pkg.sub.b"] == {"pkg.sub.c"} and graph["pkg.sub.c"] == {"pkg.sub.a"}
    assert find_cycle(graph) == ["pkg.sub.a", "pkg.sub.b", "pkg.sub.c", "pkg.sub.a"]


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The module graph folded onto paretorl's own packages and top-level modules (paretorl.search, ...)."""
    top = lambda name: ".".join(name.split(".")[:2])  # noqa: E731
    folded: dict[str, set[str]] = {}
    for module, imports in graph.items():
        folded.setdefault(top(module), set()).update(top(i) for i in imports if top(i) != top(module))
    return folded


def test_paretorl_has_no_import_cycle():
    graph = import_graph()
    assert len(graph) > 20, f"found only {len(graph)} modules under {ROOT}"
    cycle = find_cycle(graph)
    assert cycle is None, f"import cycle in {ROOT}: {' -> '.join(cycle)}"


def test_paretorl_packages_import_each_other_in_one_direction():
    """Floors: e.g. sweep/ (running) may import report/ and search/, report/ may import search/,
    never the other way, even where no module-level cycle results."""
    folded = package_graph(import_graph())
    assert {"paretorl.search", "paretorl.report", "paretorl.sweep"} <= folded.keys()
    cycle = find_cycle(folded)
    assert cycle is None, f"packages import each other in {ROOT}: {' -> '.join(cycle)}"
