"""The layers of docs/architecture.md hold (`lint-imports`, run by `make lint`), and the contract bites:
an upward import or a circle put back into a copy of the package makes it fail."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [str(LINT_IMPORTS), str(root / "pyproject.toml"), "--no-cache"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def _copy(tmp_path: Path) -> Path:
    shutil.copytree(REPO / "gptx_cli", tmp_path / "gptx_cli", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_the_layers_hold():
    res = _lint_imports(REPO)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "0 broken" in res.stdout


@pytest.mark.parametrize(
    ("module", "line", "broken"),
    [
        ("config/spec.py", "from gptx_cli.cli import app", "layers: errors"),  # upward: config -> cli
        ("model/hf.py", "from gptx_cli.checkpoint import resolve", "layers: errors"),  # model reads files
        ("config/schemas.py", "from gptx_cli.config.validate import Problem", "config: schemas"),  # circle
    ],
)
def test_an_upward_import_or_a_circle_fails(tmp_path, module, line, broken):
    root = _copy(tmp_path)
    path = root / "gptx_cli" / module
    path.write_text(path.read_text() + f"\n\ndef _injected() -> None:\n    {line}  # noqa\n")
    res = _lint_imports(root)
    assert res.returncode == 1, res.stdout
    assert broken in res.stdout.split("Broken contracts")[-1], res.stdout


def test_no_function_in_eval_is_over_80_lines() -> None:
    """Issue #24: eval/ reads as small units (task kinds, one scorer, one decode loop per shape)."""
    import ast

    long = []
    for path in sorted((Path(__file__).resolve().parents[1] / "gptx_cli" / "eval").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = (node.end_lineno or node.lineno) - node.lineno + 1
                if n > 80:
                    long.append(f"{path.name}:{node.lineno} {node.name} ({n} lines)")
    assert not long, long


def test_generation_has_one_decode_loop() -> None:
    """Issue #24: `generate` (one prompt, streamed) and `generate_batch` (left-padded rows) are both
    `_decode`; no other function in generate.py loops over new tokens."""
    import ast

    tree = ast.parse((Path(__file__).resolve().parents[1] / "gptx_cli" / "eval" / "generate.py").read_text())
    loops = [
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef)
        and any(isinstance(n, ast.For) and "max_new_tokens" in ast.unparse(n.iter) for n in ast.walk(node))
    ]
    assert loops == ["_decode"], loops


def test_train_imports_gptx_at_module_level() -> None:
    """Issue #26: train/ imports every gptx module at the top (it imports torch anyway); only optional
    third-party packages (torchao) and torch's own submodules may load inside a function."""
    import ast

    local = []
    for path in sorted((REPO / "gptx_cli" / "train").glob("*.py")):
        for fn in ast.walk(ast.parse(path.read_text())):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in ast.walk(fn):
                    if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("gptx_cli"):
                        local.append(f"{path.name}:{node.lineno} from {node.module} import ...")
                    if isinstance(node, ast.Import) and any(
                        a.name.startswith("gptx_cli") for a in node.names
                    ):
                        local.append(f"{path.name}:{node.lineno} import ...")
    assert not local, local
