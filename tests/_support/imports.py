"""berg_onnx's import graph from the source's AST, imports inside functions included.

Why an AST walk and not ``sys.modules``: an import inside a function runs only on
the path that calls it, so a cycle through one is invisible until that path runs;
reading every ``import`` statement finds it up front. ``if TYPE_CHECKING:`` imports
are counted too: a type import that runs upward is a layering error even if it never
executes.
"""

from __future__ import annotations

import ast
from pathlib import Path


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _absolute(node: ast.ImportFrom, current: str, is_package: bool) -> str:
    if node.level == 0:
        return node.module or ""
    base = current.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def import_graph(root: Path) -> dict[str, set[str]]:
    """{module: modules of the package ``root`` it imports}, for every ``.py`` under root.

    ``from pkg import name`` counts as importing ``pkg.name`` when that is a module,
    else ``pkg`` itself. ``__main__`` modules are entry points, not part of the graph.
    """
    pkg = root.name
    files = {module_name(root, p): p for p in root.rglob("*.py") if p.name != "__main__.py"}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        is_package = path.name == "__init__.py"
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _absolute(node, name, is_package)
                targets = [
                    f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names
                ]
            else:
                continue
            for target in targets:
                while target and target not in files:  # import a.b.c -> the module a.b.c
                    target = target.rpartition(".")[0]
                if target and target.split(".")[0] == pkg and target != name:
                    edges.add(target)
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


#: berg_onnx's layers, bottom (0) to top: a module may import its own layer and those below.
LAYERS: dict[str, int] = {
    "berg_onnx.errors": 0,
    "berg_onnx.constants": 0,
    "berg_onnx._version": 0,
    "berg_onnx.utils": 1,
    "berg_onnx.source": 2,
    "berg_onnx.inputs": 2,
    "berg_onnx.session": 3,
    "berg_onnx.model": 3,
    "berg_onnx.experiment": 4,
    "berg_onnx.engines": 5,
    "berg_onnx.brain": 5,
    "berg_onnx.control": 5,
    "berg_onnx.web": 5,
    "berg_onnx.api": 6,
    "berg_onnx.cli": 7,
    "berg_onnx._compat": 7,
    "berg_onnx": 7,
}


def layer_of(module: str) -> int:
    """The layer of ``module``: that of its longest listed prefix (KeyError if none)."""
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        prefix = ".".join(parts[:n])
        if prefix in LAYERS:
            return LAYERS[prefix]
    raise KeyError(f"{module} is in no layer of LAYERS")


def upward_imports(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """(importer, imported) pairs where a module imports a layer above its own."""
    return sorted(
        (m, t) for m, targets in graph.items() for t in targets if layer_of(t) > layer_of(m)
    )
