"""A small real-text corpus that is on every machine: the Python standard library's own documentation.

It takes the docstrings of the standard library's modules, classes and functions, plus the language
reference topics shipped in `pydoc_data.topics`, one JSON document per module, in a fixed order, so the
same Python gives the same bytes. No text is written for gptx and nothing is downloaded; the demo
(`make demo`) trains on it.
"""

from __future__ import annotations

import ast
import json
import os
import sys
import sysconfig
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

from gptx_cli.fsutil import atomic_path

_SKIP_TOP = {"site-packages", "test", "idlelib", "lib2to3", "turtledemo", "tkinter", "ensurepip"}
_MIN_DOCSTRING_CHARS = 40


def _module_docstrings(path: Path) -> str:
    try:
        tree = ast.parse(path.read_bytes())
    except (SyntaxError, ValueError, OSError):
        return ""
    parts = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node)
            if doc and len(doc) >= _MIN_DOCSTRING_CHARS:
                parts.append(doc)
    return "\n\n".join(parts)


def iter_stdlib_documents() -> Iterator[dict[str, str]]:
    """Yield {"text", "source"} documents from the running Python's standard library."""
    root = Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if rel.parts[0] in _SKIP_TOP or "tests" in rel.parts:
            continue
        text = _module_docstrings(path)
        if text:
            yield {"text": text, "source": f"stdlib/{rel.as_posix()}"}
    try:
        from pydoc_data.topics import topics
    except ImportError:  # some distributions strip pydoc_data
        return
    for name in sorted(topics):
        yield {"text": topics[name].strip(), "source": f"pydoc_data/topics/{name}"}


VAL_EVERY = 20  # every 20th document goes to the validation split


def write_stdlib_corpus(out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Write `train.jsonl` and `val.jsonl` (every VAL_EVERY-th document) into out_dir; returns the paths.

    Files are written under temporary names and renamed; existing complete files are reused, since the
    same Python gives the same corpus.
    """
    out = Path(out_dir)
    paths = {"train": out / "train.jsonl", "val": out / "val.jsonl"}
    if all(p.is_file() for p in paths.values()):
        return paths
    out.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        files = {}
        for k, p in paths.items():
            files[k] = stack.enter_context(open(stack.enter_context(atomic_path(p)), "w", encoding="utf-8"))
        for i, doc in enumerate(iter_stdlib_documents()):
            split = "val" if i % VAL_EVERY == VAL_EVERY - 1 else "train"
            files[split].write(json.dumps(doc, ensure_ascii=False) + "\n")
    return paths


def default_cache_dir() -> Path:
    """Where the built corpus is kept: $XDG_CACHE_HOME/gptx/python-docs-<python version>."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    ver = ".".join(map(str, sys.version_info[:3]))
    return base / "gptx" / f"python-docs-{ver}"


def iter_stdlib_qa(limit: int | None = None) -> Iterator[dict[str, str]]:
    """Prompt/completion records from the standard library: "What does `json.dumps` do?" -> the first
    paragraph of its docstring (real text, for the finetuning examples and tests), in a fixed order."""
    import importlib
    import inspect

    n = 0
    modules = (
        "json", "textwrap", "shutil", "pathlib", "string", "heapq", "bisect", "fnmatch", "glob", "os.path",
        "functools", "collections", "difflib", "statistics", "random", "tempfile", "zipfile", "csv",
        "urllib.parse", "calendar", "copy", "pprint", "contextlib", "inspect", "ast", "logging", "argparse",
    )  # fmt: skip
    for modname in modules:
        mod = importlib.import_module(modname)
        for name in sorted(getattr(mod, "__all__", None) or dir(mod)):
            obj = getattr(mod, name, None)
            if name.startswith("_") or not (inspect.isroutine(obj) or inspect.isclass(obj)):
                continue
            doc = inspect.getdoc(obj) or ""
            para = doc.split("\n\n")[0].strip()
            if len(para) < _MIN_DOCSTRING_CHARS:
                continue
            yield {"prompt": f"What does `{modname}.{name}` do?", "completion": " " + para}
            n += 1
            if limit is not None and n >= limit:
                return


def write_stdlib_qa(path: str | os.PathLike[str], limit: int | None = None) -> Path:
    """`iter_stdlib_qa` as a JSON-lines file (written under a temporary name, then renamed)."""
    from gptx_cli.fsutil import write_text

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    return write_text(out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in iter_stdlib_qa(limit)))
