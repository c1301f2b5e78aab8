"""Every test that starts several processes carries the `multiprocess` mark, so
benchmarks/loop_multiprocess.py (which repeats the marked tests to find flaky ones) misses none: a test
whose body passes `--nproc` / `--nnodes` (a literal argument) must be marked, itself or by its module."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent
FLAGS = {"--nproc", "--nnodes"}


def _marks(decorators: list[ast.expr]) -> set[str]:
    found = set()
    for node in decorators:
        for sub in ast.walk(node):
            if (
                isinstance(sub, ast.Attribute)
                and isinstance(sub.value, ast.Attribute)
                and sub.value.attr == "mark"
            ):
                found.add(sub.attr)
    return found


def _module_marks(tree: ast.Module) -> set[str]:
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "pytestmark" for t in node.targets
        ):
            return _marks([node.value])
    return set()


def _passes_a_launch_flag(func: ast.FunctionDef) -> bool:
    """A `--nproc` / `--nnodes` literal passed on: a call's argument or an item of a list or tuple (an
    argv), not, say, a string compared with a hint."""
    body = ast.Module(body=func.body, type_ignores=[])
    for node in ast.walk(body):
        items = (
            node.args
            if isinstance(node, ast.Call)
            else node.elts
            if isinstance(node, (ast.List, ast.Tuple))
            else []
        )
        if any(isinstance(item, ast.Constant) and item.value in FLAGS for item in items):
            return True
    return False


def test_every_test_that_starts_several_processes_is_marked_multiprocess():
    unmarked = []
    for path in sorted(TESTS.rglob("test_*.py")):
        tree = ast.parse(path.read_text())
        module = _module_marks(tree)
        for node in tree.body:
            if (
                isinstance(node, ast.FunctionDef)
                and node.name.startswith("test_")
                and _passes_a_launch_flag(node)
            ):
                if "multiprocess" not in module | _marks(node.decorator_list):
                    unmarked.append(f"{path.relative_to(TESTS)}::{node.name}")
    assert not unmarked, "multi-process tests without @pytest.mark.multiprocess: " + ", ".join(unmarked)


def test_the_check_sees_a_marked_and_an_unmarked_test():
    source = (
        "import pytest\n"
        "@pytest.mark.multiprocess\n"
        "def test_a(): run('train', '--nproc', '2')\n"
        "def test_b(): run('train', '--nproc', '2')\n"
        "def test_c(): run('train')\n"
        "def test_d(): assert '--nproc' in hint\n"
        "def test_e(): cmd = ['gptx', '--nnodes', '2']\n"
    )
    tree = ast.parse(source)
    funcs = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
    assert [_passes_a_launch_flag(f) for f in funcs] == [True, True, False, False, True]
    assert ["multiprocess" in _marks(f.decorator_list) for f in funcs] == [True, False, False, False, False]
