"""The package's modules import each other without cycles (function-level and TYPE_CHECKING imports included)."""

import ast
from pathlib import Path

import reneg

ROOT = Path(reneg.__file__).parent


def _modules() -> dict[str, tuple[Path, bool]]:
    modules = {}
    for path in ROOT.rglob("*.py"):
        parts = ["reneg", *path.relative_to(ROOT).with_suffix("").parts]
        package = parts[-1] == "__init__"
        modules[".".join(parts[:-1] if package else parts)] = (path, package)
    return modules


def import_graph() -> dict[str, set[str]]:
    """Module -> the reneg modules it names in any import statement (a package's own __init__ not implied)."""
    modules, graph = _modules(), {}
    for name, (path, package) in modules.items():
        base = name.split(".") if package else name.split(".")[:-1]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                stem = base[:len(base) - node.level + 1] if node.level else []
                module = ".".join(stem + ([node.module] if node.module else []))
                targets |= {module} | {f"{module}.{alias.name}" for alias in node.names}
        graph[name] = {target for target in targets if target in modules and target != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, found = {}, {}, [], []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while not component or component[-1] != node:
                component.append(stack.pop())
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles():
    graph = import_graph()
    assert "reneg.evaluate.plan" in graph["reneg.evaluate.runner"]
    assert cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_nothing_outside_the_world_imports_it():
    """The shapes world is a plugin on top: it registers itself through entry points, nobody imports it."""
    importers = {module for module, targets in import_graph().items()
                 if not module.startswith("reneg.world") and any(t.startswith("reneg.world") for t in targets)}
    assert importers == set()
