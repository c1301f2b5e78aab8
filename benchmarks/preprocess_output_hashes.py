"""Print the sha256 of every file `gptx preprocess` writes for a fixed set of small inputs.

Run it before and after a refactor of the preprocessing code: the two outputs must be identical
(byte-identical preprocessing). Usage: python benchmarks/preprocess_output_hashes.py [WORKDIR]
Inputs are real text (slices of the Python standard library's sources plus edge cases from
tests/data/datagen.py); tokenizers come from $GPTX_SHARED/assets/tokenizers (default ../shared).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "data"))
from datagen import EDGE_TEXTS, stdlib_documents  # noqa: E402

SHARED = Path(os.environ.get("GPTX_SHARED", REPO.parent / "shared")).resolve()
TOK = SHARED / "assets" / "tokenizers"
NEOX = str(TOK / "neox-20b" / "neox-encoder.json")
# Files whose bytes carry the run's own paths or clock; their names are listed, their bytes not hashed.
VOLATILE = {"preprocess_log.txt"}


def _inputs(root: Path) -> dict[str, Path]:
    docs = [d[: 300 + 97 * i % 4000] for i, d in enumerate(stdlib_documents(60))]
    docs = docs[:17] + EDGE_TEXTS + docs[17:]
    (root / "pre").mkdir()
    for part in range(2):
        lines = [json.dumps({"text": d}) for d in docs[part::2]]
        (root / "pre" / f"part{part}.jsonl").write_text("\n".join(lines) + "\n")
    (root / "txt").mkdir()
    (root / "txt" / "a.txt").write_text("\n".join(d.replace("\n", " ") for d in docs[:20]) + "\n")
    ft = [{"prompt": d[:200], "completion": d[200:500]} for d in docs if len(d) > 250]
    (root / "ft.jsonl").write_text("\n".join(json.dumps(r) for r in ft) + "\n")
    chat = [
        {"messages": [{"role": "user", "content": d[:150]}, {"role": "assistant", "content": d[150:400]}]}
        for d in docs
        if len(d) > 200
    ]
    (root / "chat.jsonl").write_text("\n".join(json.dumps(r) for r in chat) + "\n")
    return {"pre": root / "pre", "txt": root / "txt", "ft": root / "ft.jsonl", "chat": root / "chat.jsonl"}


def _v2_yaml(root: Path, name: str, src: Path, out: Path, tokenizer: str, extra: str) -> Path:
    tok = (
        f'    custom_tokenizer: "gpt2tokenizer"\n    tokenizer_params:\n'
        f'        vocab_file: "{TOK / "gpt2" / "gpt2-vocab.bpe"}"\n'
        f'        encoder_file: "{TOK / "gpt2" / "gpt2-encoder.json"}"\n'
        if tokenizer == "gpt2"
        else f'    huggingface_tokenizer: "{NEOX}"\n'
    )
    text = (
        f'setup:\n    data:\n        source: "{src}"\n        type: "local"\n    mode: "pretraining"\n'
        f'    output_dir: "{out}"\n    processes: 1\n'
        f"processing:\n{tok}    max_seq_length: 128\n    seed: 0\n"
        '    read_hook: "cerebras.modelzoo.data_preparation.data_preprocessing.hooks:text_read_hook"\n'
        '    read_hook_kwargs:\n        text_key: "text"\n'
        f'    use_ftfy: True\n    ftfy_normalizer: "NFC"\n{extra}'
    )
    path = root / f"{name}.yaml"
    path.write_text(text)
    return path


def _cases(root: Path, inp: dict[str, Path]) -> dict[str, list[str]]:
    g = ["--tokenizer", "gpt2", "--max-seq-length", "128"]
    n = ["--tokenizer", NEOX, "--max-seq-length", "128"]
    pre = ["--input", str(inp["pre"])]
    ft = [
        "--mode",
        "finetuning",
        "--input",
        str(inp["ft"]),
        "--prompt-key",
        "prompt",
        "--completion-key",
        "completion",
    ]
    return {
        "gpt2_pack": [*pre, *g],
        "gpt2_nopack": [*pre, *g, "--no-pack-sequences"],
        "neox_pack": [*pre, *n],
        "gpt2_txt": ["--input", str(inp["txt"]), *g],
        "gpt2_vsl": [*pre, *g, "--use-vsl"],
        "gpt2_mmidx": [*pre, *g, "--output-format", "mmidx"],
        "gpt2_corpus": [*pre, *g, "--output-format", "corpus"],
        "gpt2_two_procs": [*pre, *g, "--processes", "2", "--samples-per-file", "20"],
        "ft_gpt2": [*ft, *g],
        "ft_gpt2_vsl": [*ft, *g, "--use-vsl"],
        "ft_neox_splits": [*ft, *n, "--data-splits", "train=0.8,val=0.2", "--seed", "3"],
        "chat_gpt2": ["--mode", "finetuning", "--input", str(inp["chat"]), *g, "--chat-key", "messages"],
        "v2_gpt2_shuffle": ["--config", "v2_gpt2_shuffle"],
        "v2_neox_nopack": ["--config", "v2_neox_nopack"],
        "v2_gpt2_vsl": ["--config", "v2_gpt2_vsl"],
    }


def main() -> int:
    work = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="gptx-pphash-"))
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    inp = _inputs(work)
    env = {**os.environ, "GPTX_TOKENIZER_DIR": str(TOK), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    yamls = {
        "v2_gpt2_shuffle": (
            "gpt2",
            "    shuffle: True\n    shuffle_seed: 7\ndataset:\n    pack_sequences: True\n",
        ),
        "v2_neox_nopack": ("neox", "dataset:\n    pack_sequences: False\n"),
        "v2_gpt2_vsl": ("gpt2", "dataset:\n    use_vsl: True\n"),
    }
    failed = 0
    for name, args in _cases(work, inp).items():
        out = work / "out" / name
        if args[0] == "--config":
            tok, extra = yamls[name]
            args = ["--config", str(_v2_yaml(work, name, inp["pre"], out, tok, extra))]
        else:
            args = [*args, "--output-dir", str(out)]
        res = subprocess.run(
            [sys.executable, "-m", "gptx_cli.cli", "preprocess", *args, "--no-progress"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        print(f"## {name} rc={res.returncode}")
        if res.returncode != 0:
            failed += 1
            print(res.stderr.strip().splitlines()[-1] if res.stderr.strip() else "(no stderr)")
            continue
        for path in sorted(p for p in out.rglob("*") if p.is_file()):
            rel = path.relative_to(work / "out")
            if path.name in VOLATILE:
                print(f"{'(volatile)':64}  {rel}")
            else:
                print(f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {rel}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
