"""The layers point down and no modules import each other in a circle.

A static walk (ast) over tasks/, flows/ and flywheel/, imports inside functions included: the CLI
(flywheel/) may use flows/ and tasks/, flows/ may use tasks/, tasks/ uses neither."""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("tasks", "flows", "flywheel")
LAYER = {"flywheel": 2, "flows": 1, "tasks": 0}  # a module may import its own layer or a lower one


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_names(tree: ast.AST, module: str, is_package: bool) -> set[str]:
    """Every module named by an import anywhere in the file (functions included), `from x import y`
    counted as x.y too so that a submodule imported that way is seen."""
    package = module if is_package else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)] if node.level > 1 else base
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names.add(target)
            names.update(f"{target}.{a.name}" for a in node.names)
    return names


def import_graph(root: Path = ROOT) -> nx.DiGraph:
    """Module -> the project modules it imports, resolved to the modules that exist."""
    files = {module_name(p, root): p for pkg in PACKAGES for p in (root / pkg).rglob("*.py")
             if "__pycache__" not in p.parts}
    graph = nx.DiGraph()
    graph.add_nodes_from(files)
    for mod, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for name in imported_names(tree, mod, path.name == "__init__.py"):
            # the longest prefix that is one of our modules (`tasks.workspace.layout.Layout` -> `tasks.workspace.layout`)
            parts = name.split(".")
            while parts and ".".join(parts) not in files:
                parts.pop()
            target = ".".join(parts)
            if target and target != mod and not mod.startswith(target + "."):  # a package's own __init__
                graph.add_edge(mod, target)
    return graph


def cycles(graph: nx.DiGraph) -> list[list[str]]:
    """Each group of modules that import each other in a circle (strongly connected, size > 1)."""
    return sorted(sorted(c) for c in nx.strongly_connected_components(graph) if len(c) > 1)


def upward(graph: nx.DiGraph) -> list[tuple[str, str]]:
    return sorted((a, b) for a, b in graph.edges if LAYER[b.split(".")[0]] > LAYER[a.split(".")[0]])


def summary(graph: nx.DiGraph) -> dict:
    folders: dict[str, int] = {}
    for mod in graph.nodes:
        path = ROOT.joinpath(*mod.split("."))
        folder = mod if path.is_dir() else mod.rpartition(".")[0]
        if not path.is_dir():
            folders[folder] = folders.get(folder, 0) + 1
    return {"modules": graph.number_of_nodes(), "imports": graph.number_of_edges(),
            "cycles": cycles(graph), "upward": upward(graph), "modules_per_folder": dict(sorted(folders.items()))}


GRAPH = import_graph()


def test_no_import_cycles():
    found = cycles(GRAPH)
    assert not found, "modules that import each other in a circle: " + "; ".join(" <-> ".join(c) for c in found)


def test_layers_point_down():
    found = upward(GRAPH)
    assert not found, "upward imports (flywheel/ -> flows/ -> tasks/ only): " + ", ".join(f"{a} -> {b}"
                                                                                           for a, b in found)


def test_the_walk_sees_imports_inside_functions(tmp_path):
    pkg = tmp_path / "tasks"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from tasks import b\n    return b\n")
    (pkg / "b.py").write_text("from . import a\nimport flows.x\n")
    (tmp_path / "flows").mkdir()
    (tmp_path / "flows" / "__init__.py").write_text("")
    (tmp_path / "flows" / "x.py").write_text("")
    (tmp_path / "flywheel").mkdir()
    (tmp_path / "flywheel" / "__init__.py").write_text("")
    graph = import_graph(tmp_path)
    assert cycles(graph) == [["tasks.a", "tasks.b"]]
    assert upward(graph) == [("tasks.b", "flows.x")]


@pytest.mark.parametrize("pkg", PACKAGES)
def test_every_package_is_walked(pkg):
    assert any(m.startswith(pkg + ".") for m in GRAPH.nodes), f"no modules found under {pkg}/"


def test_the_entry_points_recorded_workspaces_name_still_resolve():
    """dvc.yaml calls `flywheel stage NAME`; prefect.yaml deploys `flows/nightly.py:flywheel_flow`."""
    import importlib

    import yaml

    from flywheel.cli import app
    from tasks.pipeline import BOOTSTRAP_STAGES, ITERATION_STAGES, _stage_fns

    pipeline = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    commands = [s.get("cmd") or s["do"]["cmd"] for s in pipeline["stages"].values()]
    assert all(c.startswith("flywheel stage ") for c in commands)
    named = {c.split()[2] for c in commands}
    assert named == set(BOOTSTRAP_STAGES) | set(ITERATION_STAGES) == set(_stage_fns())
    assert "stage" in {c.name for c in app.registered_commands}
    for deployment in yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]:
        path, func = deployment["entrypoint"].split(":")
        module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
        assert getattr(module, func).name == "flywheel"


if __name__ == "__main__":  # the figures: python tests/test_import_graph.py
    import json

    print(json.dumps(summary(GRAPH), indent=1))


def test_tasks_is_grouped_by_concern():
    """A handful of cross-cutting modules at tasks/'s top level; everything else in a folder per concern."""
    top = summary(GRAPH)["modules_per_folder"]["tasks"]
    assert top <= 12, f"tasks/ holds {top} modules at its top level; move them into the folder of their concern"
    folders = {m.split(".")[1] for m in GRAPH.nodes if m.startswith("tasks.") and m.count(".") >= 2}
    assert {"stages", "verify", "metrics", "audit", "models", "placement", "workspace", "config", "data"} <= folders
