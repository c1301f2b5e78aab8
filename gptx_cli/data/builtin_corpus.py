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
import sysconfig
from collections.abc import Iterator
from pathlib import Path

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


def write_stdlib_corpus(out_path: str | os.PathLike[str]) -> dict[str, int]:
    """Write the corpus as JSON lines (temp name, then rename); returns document and byte counts."""
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + f".tmp-{os.getpid()}")
    n_docs = n_bytes = 0
    with open(tmp, "w", encoding="utf-8") as f:
        for doc in iter_stdlib_documents():
            line = json.dumps(doc, ensure_ascii=False)
            f.write(line + "\n")
            n_docs += 1
            n_bytes += len(doc["text"].encode("utf-8"))
    os.replace(tmp, out)
    return {"documents": n_docs, "text_bytes": n_bytes}
