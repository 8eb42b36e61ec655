"""The package's shape, checked: an import-layer contract and the architecture doc's module list.

Imports are read from the source (AST), deferred ones inside functions included: a cycle
that works only because an import is deferred is still a cycle.
"""

import ast
import re
from pathlib import Path

import autorule

SRC = Path(autorule.__file__).parent
DOC = Path(__file__).parent.parent / "docs" / "ARCHITECTURE.md"

# the layers, low to high: nothing in LOWER imports anything in HIGHER (the root package is the front door, above all)
LOWER = ("autorule.data", "autorule.llm", "autorule.cache", "autorule.rules", "autorule.errors", "autorule.jsonsafe", "autorule.display")
HIGHER = ("autorule.extraction", "autorule.verifier", "autorule.validation", "autorule.reward", "autorule.integrations", "autorule.train",
          "autorule.api", "autorule.cli", "autorule.reporting", "autorule.bench", "autorule.quickstart", "autorule.plan", "autorule.rescoring")


def module_name(path: Path) -> str:
    parts = ("autorule", *path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def within(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def imports_of(module: str) -> dict[str, int]:
    """The autorule modules `module` imports, anywhere in its file, each with the line of its first import.

    `from autorule.x import y` counts as importing autorule.x.y where that is a module, else autorule.x.
    """
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: dict[str, int] = {}
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolved against the importing module's package
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]
        else:
            continue
        for target in targets:
            if target in MODULES and target != module:
                found.setdefault(target, node.lineno)
    return found


GRAPH = {m: imports_of(m) for m in MODULES}


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """One cycle (as a path that returns to its start) per strongly connected group of modules (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [shortest_cycle(graph, g) for g in groups]


def shortest_cycle(graph: dict[str, dict[str, int]], group: list[str]) -> list[str]:
    """The shortest path from the group's first module back to itself, inside the group (breadth first)."""
    start, members = group[0], set(group)
    came_from: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v]):
                if w not in members:
                    continue
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(came_from[path[-1]])
                    return [*reversed(path), start]
                if w not in came_from:
                    came_from[w] = v
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"no cycle through {start}")  # a strongly connected group always has one


def test_the_import_graph_sees_deferred_imports():
    # api imports the pipeline inside its functions only; the graph must still hold those edges
    assert "autorule.extraction.run" in GRAPH["autorule.api"]
    assert cycles({"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}, "d": {"a": 1}}) == [["a", "b", "c", "a"]]


def test_no_import_cycles():
    found = cycles(GRAPH)
    described = []
    for cycle in found:
        steps = [f"{a} (line {GRAPH[a][b]}) -> {b}" for a, b in zip(cycle, cycle[1:])]
        described.append("; ".join(steps))
    assert not found, "import cycles:\n" + "\n".join(described)


def test_lower_layers_never_import_higher_ones():
    assert set(LOWER).isdisjoint(HIGHER)
    broken = [f"{m} (line {line}) imports {target}" for m in sorted(GRAPH) if within(m, LOWER)
              for target, line in sorted(GRAPH[m].items()) if within(target, HIGHER) or target == "autorule"]
    assert not broken, "lower layers importing higher ones:\n" + "\n".join(broken)


def doc_modules() -> set[str]:
    """The modules the doc's module list names: the first fenced block under '## Modules', a tree of
    `name/` folders and `name.py` files, indented two spaces per level below `src/autorule/`."""
    section = DOC.read_text(encoding="utf-8").split("\n## Modules\n", 1)[1]
    block = section.split("```", 2)[1]
    names: set[str] = set()
    folders: list[str] = []
    for line in block.splitlines()[1:]:
        m = re.match(r"( *)(\S+)", line)
        if not m or line.strip().startswith("src/"):
            continue
        depth, entry = len(m.group(1)) // 2 - 1, m.group(2)
        if depth < 0 or not re.fullmatch(r"[A-Za-z_][\w]*(/|\.py)", entry):
            continue  # a continuation line of a description
        del folders[depth:]
        if entry.endswith("/"):
            folders.append(entry[:-1])
            names.add(".".join(["autorule", *folders]))
        else:
            stem = entry[:-3]
            names.add(".".join(["autorule", *folders] + ([] if stem == "__init__" else [stem])))
    return names


def test_the_architecture_docs_module_list_matches_the_tree():
    listed, tree = doc_modules(), set(MODULES)
    assert not tree - listed, f"in the tree, not in {DOC.name}'s module list: {sorted(tree - listed)}"
    assert not listed - tree, f"in {DOC.name}'s module list, not in the tree: {sorted(listed - tree)}"


def test_every_name_a_package_exports_is_there():
    """A name in a package's `__all__` that it does not define or import breaks `from pkg import *` and the
    documented `pkg.name` (an import an automatic fixer removed as unused left reward's half-empty once)."""
    import importlib

    missing = {}
    for path in SRC.rglob("__init__.py"):
        module = importlib.import_module(module_name(path))
        absent = [n for n in getattr(module, "__all__", []) if not hasattr(module, n)]  # hasattr also resolves a lazy name
        if absent:
            missing[module.__name__] = absent
    assert not missing
