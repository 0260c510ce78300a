"""The layers a reader can trust, read from the source: imports run down the layers, never in a circle.

Layers, bottom up: ``mlcore`` (pure ML) ← ``collection`` (the catalogue) ← ``identification``
(submissions, search, indexing, training) ← ``review`` (volunteers and curators) ← ``config``
(settings, URLs, running the site) ← ``bench`` (tooling: it may import anything; nothing of the
product imports it). An import counts wherever it is written, at module level or inside a function,
and ``from identification import search`` counts as an import of the module ``identification.search``.
Where a lower layer must start higher work, the higher app registers a hook in its ``AppConfig``.

Product modules stay readable: at most 600 lines, no function over 80 lines. Test modules share
fixtures and factories (conftest.py, factories.py, fakes.py, samples.py…), never each other.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ("mlcore", "collection", "identification", "review", "config", "bench")
PRODUCT = ("mlcore", "collection", "identification", "review", "config")
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 80

# Known exceptions: none left after issue 21. A new one is listed here only until it is fixed.
KNOWN_CYCLES: set[frozenset[str]] = set()
KNOWN_UPWARD: set[tuple[str, str]] = set()
KNOWN_LARGE_MODULES: set[str] = set()
KNOWN_LONG_FUNCTIONS: set[str] = set()
KNOWN_TEST_IMPORTS: set[tuple[str, str]] = set()


def _modules(packages) -> dict[str, Path]:
    """Dotted module name → file, for every module of these packages (migrations left out)."""
    modules = {}
    for package in packages:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "migrations" in path.parts:
                continue
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            modules[name.removesuffix(".__init__")] = path
    return modules


def _imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The modules of ``known`` that the module ``name`` imports, anywhere in its source."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            # ``from package import module`` imports the module; ``from module import name``, the module.
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # a name inside a module counts as the module
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph(packages=LAYERS) -> dict[str, set[str]]:
    modules = _modules(packages)
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(frozenset(component))
    return found


def upward_imports(graph: dict[str, set[str]]) -> set[tuple[str, str]]:
    rank = {layer: number for number, layer in enumerate(LAYERS)}
    return {
        (module, target)
        for module, targets in graph.items()
        for target in targets
        if rank[module.split(".")[0]] < rank[target.split(".")[0]]
    }


class TestTheCheckItself:
    """The graph readers can fail: a cycle and an upward import written on purpose are found."""

    def test_a_cycle_is_found(self):
        graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
        assert cycles(graph) == [frozenset({"a", "b", "c"})]

    def test_an_upward_import_is_found_and_a_downward_one_is_not(self):
        graph = {"collection.views": {"identification.search", "mlcore.imageio"}, "review.services": set()}
        assert upward_imports(graph) == {("collection.views", "identification.search")}

    def test_imports_inside_functions_and_from_a_package_count_as_the_module(self, tmp_path):
        path = tmp_path / "views.py"
        path.write_text("def page():\n    from identification import search\n    from mlcore.imageio import x\n")
        known = {"identification.search": path, "mlcore.imageio": path, "collection.views": path}
        assert _imports("collection.views", path, known) == {"identification.search", "mlcore.imageio"}


def test_no_import_runs_in_a_circle():
    found = set(cycles(import_graph())) - KNOWN_CYCLES
    assert not found, "import cycles: " + "; ".join(" <-> ".join(sorted(c)) for c in found)


def test_no_import_runs_up_the_layers():
    found = sorted(upward_imports(import_graph()) - KNOWN_UPWARD)
    assert not found, "upward imports: " + "; ".join(f"{a} -> {b}" for a, b in found)


def test_the_known_exceptions_still_exist():
    """An exception fixed elsewhere is removed from the lists above, so the lists never hide a new case."""
    graph = import_graph()
    assert set(cycles(graph)) >= KNOWN_CYCLES
    assert upward_imports(graph) >= KNOWN_UPWARD


def test_product_modules_stay_under_the_size_limit():
    sizes = {name: len(path.read_text(encoding="utf-8").splitlines()) for name, path in _modules(PRODUCT).items()}
    large = {name: lines for name, lines in sizes.items() if lines > MAX_MODULE_LINES}
    assert set(large) - KNOWN_LARGE_MODULES == set(), f"modules over {MAX_MODULE_LINES} lines: {large}"


def _functions(name: str, path: Path):
    """(qualified name, lines) of every function and method of a module."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    parents: dict[ast.AST, str] = {tree: name}
    for node in ast.walk(tree):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                parents[child] = f"{parents[node]}.{child.name}"
                if not isinstance(child, ast.ClassDef):
                    yield parents[child], child.end_lineno - child.lineno + 1
            else:
                parents[child] = parents[node]


def test_no_product_function_is_longer_than_the_limit():
    long = {
        qualified: lines
        for name, path in _modules(PRODUCT).items()
        for qualified, lines in _functions(name, path)
        if lines > MAX_FUNCTION_LINES
    }
    assert set(long) - KNOWN_LONG_FUNCTIONS == set(), f"functions over {MAX_FUNCTION_LINES} lines: {long}"


def test_no_test_module_imports_another():
    modules = _modules(["tests"])
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    tests = {name for name in modules if name.rpartition(".")[2].startswith("test_")}
    found = {(module, target) for module, targets in graph.items() for target in targets if target in tests}
    shared = defaultdict(list)
    for module, target in sorted(found - KNOWN_TEST_IMPORTS):
        shared[target].append(module)
    assert not shared, f"test modules imported by others (share through conftest or factories): {dict(shared)}"
