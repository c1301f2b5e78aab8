"""Peak RSS and wall time of `gptx convert checkpoint` vs transformers from_pretrained + save_pretrained.

    python benchmarks/bench_convert.py                       # GPT-NeoX, ~608M parameters, float32 (~2.4 GB)
    python benchmarks/bench_convert.py --hidden-size 256 --layers 2 --vocab-size 4096   # quick check

Steps (each measured route runs in its own subprocess; its peak RSS comes from wait4's rusage):
1. write a random HF GPT-NeoX (or GPT-J) checkpoint: config.json + sharded safetensors, streamed tensor by
   tensor (the parent never holds the model);
2. `gptx convert checkpoint SRC --output-dir gptx` (HF -> gptx) and back (gptx -> HF);
3. transformers: `AutoModelForCausalLM.from_pretrained(SRC)` then `save_pretrained` (the usual route).

Target (issue 7): gptx peak RSS under half of the transformers route.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def write_random_hf_checkpoint(
    out: Path, family: str, hidden: int, layers: int, vocab: int, shard: str
) -> int:
    """Random HF checkpoint of the given size, streamed; returns the parameter count."""
    import torch

    from gptx_cli.config.spec import ModelConfig
    from gptx_cli.convert.weights_convert import expected_hf_shapes
    from gptx_cli.model.hf import hf_config_from_model_config, model_config_from_hf
    from gptx_cli.weights import ShardedSafetensorsWriter, parse_size

    heads = max(1, hidden // 64)
    if family == "gpt-neox":
        hf = {
            "model_type": "gpt_neox",
            "architectures": ["GPTNeoXForCausalLM"],
            "vocab_size": vocab,
            "hidden_size": hidden,
            "num_hidden_layers": layers,
            "num_attention_heads": heads,
            "intermediate_size": 4 * hidden,
            "max_position_embeddings": 2048,
            "rotary_pct": 0.25,
        }
    else:
        hf = {
            "model_type": "gptj",
            "architectures": ["GPTJForCausalLM"],
            "vocab_size": vocab,
            "n_embd": hidden,
            "n_layer": layers,
            "n_head": heads,
            "n_positions": 2048,
            "rotary_dim": (hidden // heads) // 4,
        }
    cfg: ModelConfig = model_config_from_hf(hf)
    config_json = hf_config_from_model_config(cfg, family)  # type: ignore[arg-type]
    out.mkdir(parents=True)
    (out / "config.json").write_text(json.dumps(config_json, indent=2, sort_keys=True) + "\n")
    gen = torch.Generator().manual_seed(0)
    with ShardedSafetensorsWriter(out, parse_size(shard)) as writer:
        for name, shape in expected_hf_shapes(cfg, family).items():
            writer.add(name, torch.randn(shape, generator=gen) * 0.02)
    return writer.num_params


def measure(cmd: list[str]) -> tuple[float, float]:
    """Run `cmd`; return (wall seconds, peak RSS in MB) of that child alone."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        err = proc.stderr.read().decode() if proc.stderr else ""
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{err[-2000:]}")
    return wall, usage.ru_maxrss / 1024  # Linux: kilobytes


TRANSFORMERS_ROUTE = """
import sys, torch
from transformers import AutoModelForCausalLM
model = AutoModelForCausalLM.from_pretrained(sys.argv[1], dtype=torch.float32, local_files_only=True)
model.save_pretrained(sys.argv[2], max_shard_size=sys.argv[3])
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--family", choices=["gpt-neox", "gptj"], default="gpt-neox")
    ap.add_argument("--hidden-size", type=int, default=1536)
    ap.add_argument("--layers", type=int, default=16)
    ap.add_argument("--vocab-size", type=int, default=50432)
    ap.add_argument("--shard-size", default="500MB", help="shard size of the source and of both outputs")
    ap.add_argument("--workdir", default=None, help="where to write (default: a temporary directory)")
    ap.add_argument("--keep", action="store_true", help="keep the checkpoints")
    args = ap.parse_args()

    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bench_convert_"))
    work.mkdir(parents=True, exist_ok=True)
    src = work / "hf_src"
    try:
        if src.exists():
            shutil.rmtree(src)
        t0 = time.perf_counter()
        n = write_random_hf_checkpoint(
            src, args.family, args.hidden_size, args.layers, args.vocab_size, args.shard_size
        )
        size_mb = sum(p.stat().st_size for p in src.glob("*.safetensors")) / 2**20
        print(
            f"# {args.family}: {n:,} parameters, float32, {size_mb:,.0f} MiB in {args.shard_size} shards "
            f"(written in {time.perf_counter() - t0:.1f} s) under {work}"
        )
        gptx = [sys.executable, "-m", "gptx_cli.cli", "convert", "checkpoint", "--no-progress"]
        routes = [
            (
                "gptx convert HF -> gptx",
                gptx + [str(src), "--output-dir", str(work / "gptx"), "--shard-size", args.shard_size],
            ),
            (
                "gptx convert gptx -> HF",
                gptx
                + [
                    str(work / "gptx"),
                    "--output-dir",
                    str(work / "hf_back"),
                    "--shard-size",
                    args.shard_size,
                ],
            ),
            (
                "transformers from_pretrained + save_pretrained",
                [sys.executable, "-c", TRANSFORMERS_ROUTE, str(src), str(work / "hf_tf"), args.shard_size],
            ),
        ]
        results = []
        for label, cmd in routes:
            wall, rss = measure(cmd)
            results.append((label, wall, rss))
        print("\n| route | wall time (s) | peak RSS (MiB) | RSS / model size |\n|---|---:|---:|---:|")
        for label, wall, rss in results:
            print(f"| {label} | {wall:.1f} | {rss:,.0f} | {rss / size_mb:.2f} |")
        tf_rss = results[-1][2]
        worst = max(r[2] for r in results[:2])
        verdict = "met" if worst < tf_rss / 2 else "NOT met"
        print(f"\ngptx peak RSS / transformers peak RSS: {worst / tf_rss:.2f} (target < 0.5: {verdict})")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
