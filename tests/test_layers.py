"""The import graph follows the layers: cli -> commands -> experiments, api -> train -> models,
data -> errors, io, paths, env. No module imports from a higher layer, and no two modules import
each other through any chain (function-level imports included)."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "matrrec_cli"
LAYER = {"cli": 6, "__main__": 6, "commands": 5, "experiments": 4, "api": 4, "train": 3,
         "models": 2,
         "data": 2, "errors": 1, "io": 1, "paths": 1, "env": 1, "__init__": 1}


def _module(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _graph() -> dict[str, set[str]]:
    modules = {_module(p): p for p in PKG.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.ImportFrom) and node.module:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            for t in targets:
                if t in modules and t != name:
                    graph[name].add(t)
    return graph


def _layer(module: str) -> int:
    parts = module.split(".")
    return LAYER[parts[1]] if len(parts) > 1 else 1


def test_no_module_imports_from_a_higher_layer() -> None:
    upward = sorted(f"{m} -> {t}" for m, ts in _graph().items() for t in ts
                    if _layer(t) > _layer(m))
    assert not upward, upward


def test_data_never_imports_models_and_no_import_circle() -> None:
    graph = _graph()
    assert not [f"{m} -> {t}" for m, ts in graph.items() for t in ts
                if m.startswith("matrrec_cli.data") and t.startswith("matrrec_cli.models")]
    cycles = []
    for start in graph:  # a path back to `start` is a circle
        seen, stack = set(), list(graph[start])
        while stack:
            node = stack.pop()
            if node == start:
                cycles.append(start)
                break
            if node not in seen:
                seen.add(node)
                stack.extend(graph[node])
    assert not cycles, cycles
