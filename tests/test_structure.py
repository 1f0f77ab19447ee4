"""The code's shape, checked: stage 2 runs where torch is not installed; functions and modules stay small."""

from __future__ import annotations

import ast
import json
import subprocess
import sys

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
