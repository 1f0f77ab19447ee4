"""The code's shape, checked: stage 2 runs where torch is not installed; functions and modules stay small; the
import graph has no circle, stage 2 and the report import nothing from stage 1, the contract between the stages
never imports torch; argparse is used through its public API only."""

from __future__ import annotations

import argparse
import ast
import json
import subprocess
import sys
from pathlib import Path

from conftest import REPO, subprocess_env

MAX_FUNCTION_LINES = 60
MAX_MODULE_LINES = 400


def test_stage2_and_report_run_without_torch(fake_embeddings, tmp_path):
    """An import hook makes every `import torch` (and timm, torchvision) fail: cv and report must not need them."""
    args = ["--embeddings", str(fake_embeddings), "--params", "default"]
    cv = ["cv", *args, "--folds", "3", "--repeats", "1", "--cv-dir", str(tmp_path / "cv"), "--json", str(tmp_path / "cv.json")]
    report = ["report", *args, "--folds", "3", "--repeats", "1", "--cv-dir", str(tmp_path / "cv"),
              "--out-dir", str(tmp_path / "report"), "--patients", "none"]
    code = "\n".join([
        "import sys",
        "class NoTorch:",
        "    def find_spec(self, name, path=None, target=None):",
        "        if name.split('.')[0] in ('torch', 'timm', 'torchvision'):",
        "            raise ImportError(f'{name} is not installed here')",
        "sys.meta_path.insert(0, NoTorch())",
        "from lymphocytosis.cli.model import main",
        f"assert main({cv!r}) == 0",
        f"assert main({report!r}) == 0",
        "assert not {'torch', 'timm', 'torchvision'} & set(sys.modules)",
    ])
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=subprocess_env(), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "cv.json").read_text())["n_patients"] == 24
    assert (tmp_path / "report" / "index.html").is_file()


def test_functions_and_modules_are_small():
    too_long = []
    for path in sorted((REPO / "lymphocytosis").rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        name = path.relative_to(REPO)
        if len(text.splitlines()) > MAX_MODULE_LINES:
            too_long.append(f"{name}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    too_long.append(f"{name}:{node.lineno} {node.name}(): {lines} lines")
    assert not too_long, "\n".join(too_long)


# --- the import graph: no circles, stage 2 apart from stage 1, a torch-free contract -------------------------------

PACKAGE = REPO / "lymphocytosis"
TORCH = {"torch", "timm", "torchvision"}


def module_files() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name, for its __init__.py)."""
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def imported_names(module: str, path: Path) -> set[str]:
    """Every absolute name `module` imports, anywhere in it (inside functions too): `from . import x` as the
    submodule `pkg.x` and as `pkg`, `from .a import b` as `pkg.a.b` and `pkg.a`."""
    base = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module != "__future__":
            package = base[: len(base) - node.level + 1] if node.level else []
            source = ".".join(package + ([node.module] if node.module else []))
            names |= {source} | {f"{source}.{alias.name}" for alias in node.names}
    return names


def import_graph() -> dict[str, set[str]]:
    modules = module_files()
    return {name: {other for other in imported_names(name, path) if other in modules and other != name}
            for name, path in modules.items()}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(root: str) -> None:
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter[0]
                    counter[0] += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_circle_finder_finds_circles():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"} - {"e"}, "f": {"g"}, "g": {"f"}}
    assert sorted(circles(graph)) == [["a", "b", "c"], ["f", "g"]]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_the_import_graph_sees_imports_inside_functions():
    graph = import_graph()
    assert "lymphocytosis.extract.extraction" in graph["lymphocytosis.cli.extract"]  # imported inside a function
    assert "lymphocytosis.cli.catalog" in graph["lymphocytosis.cli.config"]  # `from .catalog import ...`


def test_no_import_circles():
    found = circles(import_graph())
    assert not found, "import circles: " + "; ".join(" <-> ".join(c) for c in found)


def test_stage2_and_report_import_nothing_from_extract():
    graph = import_graph()
    wrong = [f"{module} imports {other}" for module, others in graph.items()
             if module.startswith(("lymphocytosis.model", "lymphocytosis.report"))
             for other in others if other.startswith("lymphocytosis.extract")]
    assert not wrong, "\n".join(wrong)


def test_the_contract_never_imports_torch():
    """Statically: no contract module, nor any module of the package it imports (transitively), imports torch,
    timm or torchvision, anywhere."""
    graph, modules = import_graph(), module_files()
    reached, todo = set(), [m for m in modules if m.startswith("lymphocytosis.contract")]
    while todo:
        module = todo.pop()
        if module not in reached:
            reached.add(module)
            todo += graph[module]
    assert "lymphocytosis.contract.store" in reached
    wrong = [f"{module} imports {name}" for module in sorted(reached)
             for name in imported_names(module, modules[module]) if name.split(".")[0] in TORCH]
    assert not wrong, "\n".join(wrong)


def test_every_contract_module_imports_without_torch():
    contract = sorted(m for m in module_files() if m.startswith("lymphocytosis.contract"))
    code = "\n".join([
        "import importlib, sys",
        "class NoTorch:",
        "    def find_spec(self, name, path=None, target=None):",
        "        if name.split('.')[0] in ('torch', 'timm', 'torchvision'):",
        "            raise ImportError(f'{name} is not installed here')",
        "sys.meta_path.insert(0, NoTorch())",
        f"for name in {contract!r}:",
        "    importlib.import_module(name)",
        "assert not {'torch', 'timm', 'torchvision'} & set(sys.modules)",
        "print(len(" + repr(contract) + "))",
    ])
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=subprocess_env(), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) == len(contract) >= 5


# --- argparse is used through its public API only ------------------------------------------------------------------

SOURCE_FOLDERS = ("lymphocytosis", "tests", "benchmarks", "tools")
NOT_ARGPARSE = {"_", "_os", "_re", "_sys"}  # argparse's own module aliases, and a common throwaway name


def argparse_private_names() -> set[str]:
    """Every private name of argparse: module-level, and of its parsers, groups, actions and help formatter."""
    parser = argparse.ArgumentParser()
    objects = [argparse, argparse.ArgumentParser, argparse.HelpFormatter, argparse.Action, argparse.Namespace, parser,
               parser.add_argument_group("group"), parser.add_subparsers(), parser.add_argument("--option"),
               argparse.HelpFormatter("prog")]
    names = set()
    for obj in objects:
        names |= {n for n in [*dir(obj), *getattr(obj, "__dict__", {})] if n.startswith("_") and not n.startswith("__")}
    return names - NOT_ARGPARSE


def private_argparse_uses(text: str, names: set[str]) -> list[str]:
    """Attribute reads (`parser._actions`), imports (`from argparse import _AppendAction`) and method overrides
    (`def _get_help_string`) of argparse's private names."""
    found = []
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Attribute) and node.attr in names:
            found.append(f"{node.lineno}: .{node.attr}")
        elif isinstance(node, ast.ImportFrom) and node.module == "argparse":
            found += [f"{node.lineno}: import {a.name}" for a in node.names if a.name in names]
        elif isinstance(node, ast.ClassDef):
            found += [f"{item.lineno}: def {item.name}" for item in node.body
                      if isinstance(item, ast.FunctionDef) and item.name in names]
    return found


def test_the_private_argparse_check_finds_uses():
    names = argparse_private_names()
    assert {"_actions", "_subparsers", "_AppendAction", "_get_help_string", "_group_actions"} <= names
    text = ("from argparse import _StoreTrueAction\nclass F(argparse.HelpFormatter):\n    def _get_help_string(self, a):\n"
            "        return a.help\nchoices = parser._subparsers._group_actions[0].choices\n")
    assert len(private_argparse_uses(text, names)) == 4


def test_no_source_file_uses_argparse_private_attributes():
    names = argparse_private_names()
    paths = [p for folder in SOURCE_FOLDERS for p in sorted((REPO / folder).rglob("*.py"))] + sorted(REPO.glob("*.py"))
    wrong = [f"{path.relative_to(REPO)}:{use}" for path in paths
             for use in private_argparse_uses(path.read_text(encoding="utf-8"), names)]
    assert not wrong, "\n".join(wrong)
