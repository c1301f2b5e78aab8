"""What the reliability checks cost (issue #19), printed as tables:

checksum     verifying a ~1 GB gptx checkpoint's weight files (xxh3_64) against reading its tensors
             (load time: `open_tensors` reading every tensor, what `gptx eval` / `generate` / resume do)
memory guard `gptx train <published config>` refusing a run that cannot fit: wall time to the error
             (this was a timed assertion in tests/train/test_train_cli.py; speed lives here now)

  .venv/bin/python benchmarks/bench_reliability.py --gb 1
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def bench_checksum(gb: float, repeats: int) -> None:
    import torch

    from gptx_cli.checkpoint import read_checkpoint_meta, save_checkpoint_dir
    from gptx_cli.checksum import verify_checkpoint
    from gptx_cli.config.spec import ModelConfig
    from gptx_cli.weights import open_tensors

    cfg = ModelConfig(vocab_size=1024, hidden_size=1024, num_hidden_layers=1, num_heads=8, filter_size=4096)
    n_tensors = max(1, int(gb * 2**30 / (64 * 2**20)))  # 64 MiB fp32 tensors
    with tempfile.TemporaryDirectory() as tmp:
        items = ((f"t{i}", torch.randn(4096, 4096)) for i in range(n_tensors))
        ckpt = save_checkpoint_dir(Path(tmp) / "checkpoint_1", items, cfg, step=1)
        size = sum(p.stat().st_size for p in ckpt.glob("*.safetensors"))
        meta = read_checkpoint_meta(ckpt)
        rows = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            verify_checkpoint(ckpt, meta)
            t1 = time.perf_counter()
            with open_tensors(ckpt) as src:
                for _name, _tensor in src.items():
                    pass
            t2 = time.perf_counter()
            rows.append((t1 - t0, t2 - t1))
    print(f"checkpoint of {size / 2**30:.2f} GiB ({n_tensors} fp32 tensors), page cache warm, {repeats} runs")
    print("| run | verify (s) | load (s) | verify / load |")
    print("|---|---|---|---|")
    for i, (v, load) in enumerate(rows, 1):
        print(f"| {i} | {v:.2f} | {load:.2f} | {v / load:.2f} |")


def bench_memory_guard() -> None:
    print("| config | exit code | wall time to the error (s) |")
    print("|---|---|---|")
    for config in ("params_gptj_6B.yaml", "params_gpt_neox_20B.yaml"):
        t0 = time.perf_counter()
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "gptx_cli.cli",
                "train",
                str(REPO / "configs" / config),
                "--target-device",
                "CPU",
            ],
            capture_output=True,
            text=True,
        )
        print(f"| {config} | {r.returncode} | {time.perf_counter() - t0:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--gb", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    bench_checksum(args.gb, args.repeats)
    print()
    bench_memory_guard()


if __name__ == "__main__":
    main()
