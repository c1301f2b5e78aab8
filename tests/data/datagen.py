"""Helpers for the data tests: real text (Python's own sources and docstrings, no text written for the
project) and writers for the input formats."""

from __future__ import annotations

import json
import sysconfig
from pathlib import Path

# Edge cases both tokenizer engines must agree on, mixed into the real documents.
EDGE_TEXTS = [
    "trailing spaces   \n\n\n   and tabs\t\t\tthen text",
    "unicode: naïve café, 日本語のテキスト, emoji 🤖🚀, combining e\u0301 vs é, ﬁ ligature",
    "special token inside <|endoftext|> the text",
    "ends with eos already<|endoftext|>",
    "    \n\t  \u00a0\u2003 odd whitespace \r\n done",
    "numbers 1234567890 3.14159 and 'quotes' don't won't y'all",
]


def stdlib_documents(n: int, *, min_chars: int = 200, max_chars: int = 6000) -> list[str]:
    """`n` real documents: slices of the Python standard library's source files, in a fixed order."""
    root = Path(sysconfig.get_paths()["stdlib"])
    docs: list[str] = []
    for path in sorted(root.glob("*.py")):
        text = path.read_text(encoding="utf-8", errors="replace")
        if len(text) < min_chars:
            continue
        docs.append(text[:max_chars])
        if len(docs) >= n:
            break
    return docs


def jsonl_bytes(docs: list[str], *, key: str = "text", meta: list[str] | None = None) -> bytes:
    lines = []
    for i, d in enumerate(docs):
        rec: dict = {key: d}
        if meta is not None:
            rec["meta"] = {"pile_set_name": meta[i % len(meta)]}
        lines.append(json.dumps(rec, ensure_ascii=False).encode("utf-8") + b"\n")
    return b"".join(lines)


def write_zst(path: Path, data: bytes) -> Path:
    import zstandard

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(zstandard.ZstdCompressor(level=3).compress(data))
    return path


def make_pile(root: Path, train_docs: list[list[str]], val_docs: list[str]) -> Path:
    """A Pile-layout directory: train/00.jsonl.zst ..., val.jsonl.zst (text + meta.pile_set_name)."""
    sets = ["Pile-CC", "Github", "ArXiv"]
    for i, docs in enumerate(train_docs):
        write_zst(root / "train" / f"{i:02d}.jsonl.zst", jsonl_bytes(docs, meta=sets))
    write_zst(root / "val.jsonl.zst", jsonl_bytes(val_docs, meta=sets))
    return root
