"""The import structure of ``sgg``: every import (module level or inside a function) points down
the layers of docs/architecture.md, so there is no import circle between packages and no import
up a layer."""
import ast
import os
from collections import defaultdict

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PKG = os.path.join(REPO, "sgg")

#: top-level part of sgg -> layer (an import may only go to the same or a lower layer)
LAYERS = {
    "utils": 0, "config": 0, "protocol": 0, "registry": 0, "structures": 0,
    "checkpoint": 1, "solver": 1,
    "data": 2,
    "evaluation": 3,
    "modeling": 4,
    "distill": 5, "export": 5,
    "engine": 6,
    "cli": 7, "__main__": 7,
}


def _module_name(path: str) -> str:
    rel = os.path.relpath(path, REPO)[:-3].replace(os.sep, ".")
    return rel[: -len(".__init__")] if rel.endswith(".__init__") else rel


def _imports(path: str):
    """Absolute names of every sgg module imported anywhere in the file."""
    name = _module_name(path)
    package = name if path.endswith("__init__.py") else name.rsplit(".", 1)[0]
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "sgg":
                    yield a.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] == "sgg":
                yield target


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _graph():
    edges = defaultdict(set)
    for root, _, files in os.walk(PKG):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(root, f)
                src = _module_name(path)
                for dst in _imports(path):
                    edges[src].add(dst)
    return edges


def test_every_part_has_a_layer():
    parts = {os.path.splitext(n)[0] for n in os.listdir(PKG) if not n.startswith(("_", ".")) or n == "__main__.py"}
    parts.discard("__pycache__")
    assert parts - {"__init__"} <= set(LAYERS), f"give these a layer: {sorted(parts - set(LAYERS))}"


def test_imports_point_down_the_layers():
    up = []
    for src, dsts in _graph().items():
        a = _part(src)
        for dst in dsts:
            b = _part(dst)
            if b == "__init__" or a == "__init__":
                continue
            if LAYERS[b] > LAYERS[a]:
                up.append(f"{src} -> {dst} ({a} layer {LAYERS[a]} imports {b} layer {LAYERS[b]})")
    assert not up, "imports up the layers:\n" + "\n".join(sorted(up))


def test_no_import_circle_between_parts():
    graph = defaultdict(set)
    for src, dsts in _graph().items():
        for dst in dsts:
            if _part(src) != _part(dst) and "__init__" not in (_part(src), _part(dst)):
                graph[_part(src)].add(_part(dst))

    seen, stack = {}, []

    def visit(n):
        seen[n] = "open"
        stack.append(n)
        for m in graph[n]:
            if seen.get(m) == "open":
                pytest.fail("import circle: " + " -> ".join(stack[stack.index(m):] + [m]))
            if m not in seen:
                visit(m)
        seen[n] = "done"
        stack.pop()

    for n in list(graph):
        if n not in seen:
            visit(n)


def test_the_checker_sees_an_upward_import(tmp_path):
    """The rule catches what it should: a relative import resolved to the engine from the data layer."""
    p = tmp_path / "sgg" / "data"
    p.mkdir(parents=True)
    f = p / "bad.py"
    f.write_text("def f():\n    from ..engine import trainer\n")
    global REPO
    old = REPO
    REPO = str(tmp_path)
    try:
        assert list(_imports(str(f))) == ["sgg.engine"]
    finally:
        REPO = old
