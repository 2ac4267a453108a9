"""The folders are the architecture: layers import only downward, no cycle anywhere, papers apart, the world on top.

Every import statement counts (function-level and TYPE_CHECKING ones included). ``from P import m`` where m is
a submodule of P counts as an import of m alone when P is a package the importer sits in (it is imported
before the importer runs anyway); otherwise as one of P too.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = {"reneg": ROOT / "src" / "reneg", "benchmarks": ROOT / "benchmarks", "scripts": ROOT / "scripts"}

#: The layers of ``src/reneg``, bottom up: a module imports only from its own layer or below.
LAYERS = (
    ("reneg.errors",),
    ("reneg.registry", "reneg.io", "reneg.config", "reneg.identity", "reneg.core"),
    ("reneg.prompts", "reneg.families", "reneg.infotext"),
    ("reneg.models", "reneg.embedding"),
    ("reneg.rewards",),
    ("reneg.methods.base", "reneg.methods.spec", "reneg.methods.baselines", "reneg.methods.randomness",
     "reneg.methods.checkpoints", "reneg.methods.listeners", "reneg.methods.loop", "reneg.methods.validation",
     "reneg.methods.stopping"),
    ("reneg.methods",),  # the papers' folders, and the package that gathers them
    ("reneg.evaluate", "reneg.generate", "reneg.export", "reneg.ui"),
    ("reneg.cli", "reneg.__main__"),
    ("reneg.world",),
)
PAPERS = ("reneg.methods.reneg", "reneg.methods.dnp", "reneg.methods.npo")
#: The documented exception: ``reneg/__init__.py`` re-exports the public names lazily (``reneg.NegativeEmbedding``).
LAZY_REEXPORT = "reneg"


def _modules() -> dict[str, tuple[Path, bool]]:
    modules = {}
    for top, directory in SOURCES.items():
        for path in directory.rglob("*.py"):
            parts = [top, *path.relative_to(directory).with_suffix("").parts]
            package = parts[-1] == "__init__"
            modules[".".join(parts[:-1] if package else parts)] = (path, package)
    return modules


def import_graph() -> dict[str, set[str]]:
    """Module -> the modules of the repository it names in any import statement."""
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
                submodules = {f"{module}.{alias.name}" for alias in node.names} & set(modules)
                own_package = name.startswith(module + ".")
                if not (own_package and len(submodules) == len(node.names)):
                    targets.add(module)
                targets |= submodules
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


def layer_of(module: str) -> int:
    """The index of the layer ``module`` belongs to (the longest prefix named in :data:`LAYERS`)."""
    best, layer = "", None
    for number, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > len(best):
                best, layer = prefix, number
    if layer is None:
        raise AssertionError(f"{module} is in no layer: add it to LAYERS")
    return layer


def _source(graph):
    return {module: targets for module, targets in graph.items() if module.startswith("reneg.")}


def test_no_import_cycle_in_src_benchmarks_or_scripts():
    graph = import_graph()
    assert "reneg.evaluate.plan" in graph["reneg.evaluate.runner"]
    assert cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_layers_import_only_downward():
    """Each module imports its own layer or lower ones; the root's lazy re-exports and ``__version__`` aside."""
    upward = sorted(f"{module} -> {target}" for module, targets in _source(import_graph()).items()
                    for target in targets - {LAZY_REEXPORT} if layer_of(target) > layer_of(module))
    assert upward == []


def test_the_core_imports_nothing_of_reneg_but_the_error_type():
    graph = _source(import_graph())
    outside = sorted(f"{module} -> {target}" for module, targets in graph.items() if module.startswith("reneg.core")
                     for target in targets if not target.startswith("reneg.core") and target != "reneg.errors")
    assert outside == []
    assert any(module.startswith("reneg.core.") for module in graph)


def test_no_paper_imports_another():
    graph = _source(import_graph())
    crossing = sorted(f"{module} -> {target}" for module, targets in graph.items() for target in targets
                      for paper in PAPERS if module.startswith(paper)
                      for other in PAPERS if other != paper and target.startswith(other))
    assert crossing == []


def test_nothing_outside_the_world_imports_it():
    """The shapes world is a plugin on top: it registers itself through entry points; only experiment scripts
    (``scripts/``) study it from outside."""
    importers = {module for module, targets in import_graph().items()
                 if not module.startswith(("reneg.world", "scripts.")) and any(t.startswith("reneg.world")
                                                                               for t in targets)}
    assert importers == set()


@pytest.mark.parametrize("module, layer", [("reneg.core.rollout", 1), ("reneg.methods.reneg.train", 6),
                                           ("reneg.methods.spec", 5), ("reneg.world.plugin", 9)])
def test_layer_of_takes_the_longest_prefix(module, layer):
    assert layer_of(module) == layer


def test_counts(capsys):
    """The numbers the README's layout paragraph quotes: top-level files, layers, cycles."""
    top = sorted(path.name for path in SOURCES["reneg"].glob("*.py"))
    graph = import_graph()
    with capsys.disabled():
        print(f"\nlayering: {len(graph)} modules, {len(top)} top-level files, {len(LAYERS)} layers, "
              f"{len(cycles(graph))} cycles")
    assert len(top) <= 12
