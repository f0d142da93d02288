"""The structure the project keeps (docs/architecture.md): no import circles, no upward imports from the
methods or the data layer into the evaluation, short method files, and the public API."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "vidssl"


def import_graph() -> dict[str, set[str]]:
    """Every vidssl module -> the vidssl modules it imports, late (function-level) imports included."""
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = ".".join(package[:len(package) - node.level + 1] + ([node.module] if node.module else [])) \
                    if node.level else (node.module or "")
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            for target in targets:
                parts = target.split(".")
                while parts and ".".join(parts) not in modules:
                    parts.pop()
                if parts and ".".join(parts) != name:
                    graph[name].add(".".join(parts))
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_the_import_graph_has_no_circles() -> None:
    graph = import_graph()
    assert "vidssl.nn.local_attention" in graph and graph["vidssl.methods.moco"]  # the parser sees the package
    assert cycles(graph) == []


def test_a_planted_circle_is_found() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_upward_imports() -> None:
    graph = import_graph()
    rules = {  # importer prefix -> prefixes it must not import
        "vidssl.methods": ("vidssl.eval", "vidssl.train", "vidssl.demo"),
        "vidssl.data": ("vidssl.eval", "vidssl.methods", "vidssl.train", "vidssl.models"),
        "vidssl.nn": ("vidssl.eval", "vidssl.methods", "vidssl.data", "vidssl.models", "vidssl.train"),
        "vidssl.losses": ("vidssl.eval", "vidssl.methods", "vidssl.data", "vidssl.models", "vidssl.train"),
        "vidssl.models": ("vidssl.eval", "vidssl.methods", "vidssl.train"),
        "vidssl.engine": ("vidssl.eval", "vidssl.methods", "vidssl.train", "vidssl.models", "vidssl.data"),
        "vidssl.eval": ("vidssl.methods", "vidssl.train"),
    }
    bad = [f"{m} -> {d}" for m, deps in graph.items() for prefix, banned in rules.items() if m.startswith(prefix)
           for d in deps if d.startswith(banned)]
    assert bad == []


def test_method_files_stay_short() -> None:
    sizes = {p.name: len(p.read_text().splitlines()) for p in (PACKAGE / "methods").glob("*.py")}
    assert sizes["moco.py"] <= 150
    assert {name: n for name, n in sizes.items() if n > 300} == {}


def test_the_documented_public_api_imports() -> None:
    text = (PACKAGE.parent / "docs" / "architecture.md").read_text()
    block = text.split("## Public API", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    exec(compile(block, "docs/architecture.md", "exec"), {})  # every import line of the documented API


def test_public_api() -> None:
    from vidssl.data import VideoError, open_video
    from vidssl.eval import evaluate_davis, propagate, propagate_sequence
    from vidssl.methods import METHODS, Method
    from vidssl.models import build_backbone

    assert callable(open_video) and issubclass(VideoError, RuntimeError)
    assert callable(evaluate_davis) and callable(propagate) and callable(propagate_sequence)
    assert METHODS and getattr(Method, "_is_protocol", False)
    assert build_backbone("resnet18").num_features == 512


@pytest.mark.parametrize("module", ["vidssl.nn", "vidssl.losses"])
def test_the_shared_layers_import_only_the_engine_helpers(module: str) -> None:
    graph = import_graph()
    deps = {d for m, ds in graph.items() if m.startswith(module) for d in ds if not d.startswith(module)}
    assert deps <= {"vidssl.engine.distributed", "vidssl.engine"}, deps
