"""LoRA vs full fine-tuning on the same model: trainable parameters, peak memory, step time.

Each mode runs in a fresh subprocess (so peak memory is that mode's alone): build a GPT-J shape,
apply ModelZoo's Lora callback (r, alpha, all targets by default, or --target-modules) or not, then
train `--steps` steps of the real train path (`lm_loss`, ModelZoo AdamW on optimizer_param_groups, which
holds only trainable parameters) on random batches with a half-prompt loss mask. Peak memory is
torch.cuda.max_memory_allocated on a GPU, the process's peak RSS on the CPU (minus the RSS after the
imports); the estimate is gptx's memory guard (`memory_guard.estimate_bytes`) for the same run.

    .venv/bin/python benchmarks/bench_lora.py                        # CPU, hidden 512, 4 layers
    .venv/bin/python benchmarks/bench_lora.py --device cuda --hidden 4096 --layers 4 --seq 2048 --dtype bfloat16
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def run_one(args: argparse.Namespace) -> dict:
    import torch

    from gptx_cli.api import build_model
    from gptx_cli.config import load_run_spec
    from gptx_cli.config.lora import add_lora_shortcut, lora_from_raw
    from gptx_cli.model.init import optimizer_param_groups
    from gptx_cli.model.lora import apply_lora
    from gptx_cli.model.loss import lm_loss
    from gptx_cli.train.memory_guard import estimate_bytes
    from gptx_cli.train.optim import build_optimizer

    torch.set_num_threads(args.threads)
    sets = [
        f"model.hidden_size={args.hidden}", f"model.num_hidden_layers={args.layers}",
        f"model.num_heads={args.hidden // 64}", f"model.filter_size={4 * args.hidden}",
        f"model.max_position_embeddings={args.seq}", f"model.rotary_dim={16}",
    ]  # fmt: skip
    spec = load_run_spec(REPO / "configs" / "tiny_gptj.yaml", overrides=sets)
    if args.mode == "lora":
        add_lora_shortcut(spec.raw, args.r, args.alpha)
        if args.target_modules:
            spec.raw["trainer"]["init"]["callbacks"][-1]["Lora"]["lora_params"]["target_modules"] = (
                args.target_modules.split(",")
            )
    device = torch.device(args.device)
    base_rss = _rss_mib()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    model = build_model(spec.model, device=device, seed=0)
    groups = lora_from_raw(spec.raw)
    if groups:
        apply_lora(model, groups, seed=0)
    opt = build_optimizer(spec.optimizer, optimizer_param_groups(model, spec.model))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    g = torch.Generator().manual_seed(0)
    times = []
    autocast = args.dtype != "float32"
    for step in range(args.steps):
        ids = torch.randint(0, spec.model.vocab_size, (args.batch, args.seq + 1), generator=g).to(device)
        mask = torch.zeros(args.batch, args.seq, dtype=torch.int64, device=device)
        mask[:, args.seq // 2 :] = 1
        t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=getattr(torch, args.dtype), enabled=autocast):
            out = lm_loss(model, ids[:, :-1], ids[:, 1:], mask)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step:
            times.append(time.perf_counter() - t0)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base_rss
    est = estimate_bytes(spec, args.batch, 1, False, False)
    return {
        "mode": args.mode,
        "trainable": trainable,
        "total": total,
        "optimizer_tensors": sum(len(s) for s in opt.state.values()),
        "peak_mib": peak,
        "estimate_mib": est["total"] / 2**20,
        "step_s": sorted(times)[len(times) // 2] if times else float("nan"),
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--r", type=int, default=8)
    p.add_argument("--alpha", type=float, default=16)
    p.add_argument("--target-modules", default="MultiheadAttention")
    p.add_argument("--mode", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.mode:
        print(json.dumps(run_one(args)))
        return
    rows = []
    for mode in ("full", "lora"):
        cmd = [sys.executable, __file__, *sys.argv[1:], "--mode", mode]
        res = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=REPO)
        rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
    print(
        f"device={args.device} dtype={args.dtype} hidden={args.hidden} layers={args.layers} seq={args.seq} "
        f"batch={args.batch} vocab=50257 lora r={args.r} alpha={args.alpha} targets={args.target_modules or 'all'}"
    )
    print(
        "| mode | trainable params | total params | optimizer tensors | peak memory MiB | guard estimate MiB | step s |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['mode']} | {r['trainable']:,} | {r['total']:,} | {r['optimizer_tensors']} | "
            f"{r['peak_mib']:,.0f} | {r['estimate_mib']:,.0f} | {r['step_s']:.3f} |"
        )


if __name__ == "__main__":
    main()
