"""End-to-end `gptx preprocess` throughput against the raw `tokenizers` encode_batch, in one run.

Builds a `.jsonl.zst` of real text found on this machine (the Python standard library's and installed
packages' sources and docs, split into documents of at most 16 kB; nothing written for the project,
nothing downloaded), then measures on the same text and the same number of processes:

  raw tokenizers   `tokenizers` GPT-2 encode_batch over the texts already in memory (RAYON_NUM_THREADS=N)
  gptx tokenizers  `gptx preprocess --tokenizer-backend tokenizers` end to end (read .zst, parse, encode,
                   pack, write compressed HDF5)
  gptx auto        the same with the default backend (tiktoken for GPT-2)

and checks that both gptx runs wrote byte-identical HDF5 files.

    .venv/bin/python benchmarks/bench_preprocess.py --mb 50 --processes 2
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOC_CHARS = 16_000


def real_text_documents(target_bytes: int) -> list[str]:
    roots = [Path(sysconfig.get_paths()["stdlib"]), Path(sysconfig.get_paths()["purelib"])]
    docs: list[str] = []
    size = 0
    for root in roots:
        for path in sorted(root.rglob("*")):
            if path.suffix not in (".py", ".txt", ".rst", ".md") or not path.is_file():
                continue
            try:
                text = path.read_text(encoding="utf-8")
            except (UnicodeDecodeError, OSError):
                continue
            for i in range(0, len(text), DOC_CHARS):
                doc = text[i : i + DOC_CHARS]
                if doc.strip():
                    docs.append(doc)
                    size += len(doc.encode("utf-8"))
            if size >= target_bytes:
                return docs
    if size < target_bytes:
        print(f"note: found only {size / 1e6:.1f} MB of text on this machine", file=sys.stderr)
    return docs


def write_jsonl_zst(docs: list[str], path: Path) -> int:
    import zstandard

    data = b"".join(json.dumps({"text": d}).encode("utf-8") + b"\n" for d in docs)
    path.write_bytes(zstandard.ZstdCompressor(level=3).compress(data))
    return len(data)


def raw_tokenizers_rate(docs: list[str], tokenizer_dir: Path, processes: int) -> tuple[float, int]:
    """Tokens/s of tokenizers' encode_batch with N threads, in a fresh process (rayon reads the env once)."""
    code = f"""
import json, sys, time
from gptx_cli.data.tokenizer import load_tokenizer
tok = load_tokenizer({str(tokenizer_dir)!r}, backend="tokenizers").hf
docs = [json.loads(l)["text"] for l in sys.stdin]
t0 = time.perf_counter(); n = 0
for i in range(0, len(docs), 1000):
    n += sum(len(e.ids) for e in tok.encode_batch(docs[i:i + 1000], add_special_tokens=False))
print(json.dumps({{"seconds": time.perf_counter() - t0, "tokens": n}}))
"""
    env = {**os.environ, "RAYON_NUM_THREADS": str(processes), "TOKENIZERS_PARALLELISM": "true"}
    stdin = "".join(json.dumps({"text": d}) + "\n" for d in docs)
    out = subprocess.run(
        [sys.executable, "-c", code], input=stdin, capture_output=True, text=True, env=env, check=True
    )
    res = json.loads(out.stdout)
    return res["tokens"] / res["seconds"], res["tokens"]


def gptx_rate(
    src: Path, out: Path, tokenizer_dir: Path, processes: int, backend: str
) -> tuple[float, int, float]:
    cmd = [
        sys.executable, "-m", "gptx_cli.cli", "preprocess", "-i", str(src), "-o", str(out), "--overwrite",
        "--tokenizer", str(tokenizer_dir), "--tokenizer-backend", backend, "--processes", str(processes),
        "--no-progress",
    ]  # fmt: skip
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    seconds = time.perf_counter() - t0  # includes start-up: what a user waits for
    tokens = json.loads((out / "data_params.json").read_text())["post-process"]["document_tokens"]
    return tokens / seconds, tokens, seconds


def digest(d: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(d.glob("*.h5")):
        h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--mb", type=float, default=50.0, help="MB of uncompressed JSON lines to build (default 50)"
    )
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument(
        "--tokenizer-dir",
        default=os.environ.get("GPTX_TOKENIZER_DIR", str(REPO.parent / "shared/assets/tokenizers")),
        help="directory holding gpt2/ (default $GPTX_TOKENIZER_DIR or ../shared/assets/tokenizers)",
    )
    ap.add_argument(
        "--workdir", default=None, help="where to build the input and outputs (default a temp dir)"
    )
    args = ap.parse_args()
    tokenizer_dir = Path(args.tokenizer_dir) / "gpt2"
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        work = Path(tmp)
        docs = real_text_documents(int(args.mb * 1e6))
        src = work / "real-text.jsonl.zst"
        raw_bytes = write_jsonl_zst(docs, src)
        print(
            f"input: {src.name}: {len(docs):,} documents, {raw_bytes / 1e6:.1f} MB of JSON lines, "
            f"{src.stat().st_size / 1e6:.1f} MB compressed; processes={args.processes}"
        )
        raw_rate, raw_tokens = raw_tokenizers_rate(docs, tokenizer_dir, args.processes)
        rows = [("raw tokenizers encode_batch", raw_rate, raw_tokens, None)]
        digests = {}
        for backend in ("tokenizers", "auto"):
            rate, tokens, seconds = gptx_rate(
                src, work / f"out-{backend}", tokenizer_dir, args.processes, backend
            )
            rows.append((f"gptx preprocess ({backend})", rate, tokens, seconds))
            digests[backend] = digest(work / f"out-{backend}")
        print(f"\n{'what':<34} {'tokens/s':>12} {'tokens':>12} {'vs raw':>7}")
        for name, rate, tokens, _ in rows:
            print(f"{name:<34} {rate:>12,.0f} {tokens:>12,} {rate / raw_rate:>6.2f}x")
        same = digests["tokenizers"] == digests["auto"]
        print(f"\nHDF5 output identical across backends: {'yes' if same else 'NO'}")
        if not same:
            sys.exit(1)


if __name__ == "__main__":
    main()
