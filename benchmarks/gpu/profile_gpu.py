"""Where a gptx GPT-J-6B training step spends its GPU time: kernel time by category and the top kernels.

    PYTHONPATH=. python3 benchmarks/gpu/profile_gpu.py                 # compiled, all 28 layers
    PYTHONPATH=. python3 benchmarks/gpu/profile_gpu.py --eager --layers 8
    PYTHONPATH=. python3 benchmarks/gpu/profile_gpu.py --tiny          # toy size on the CPU

Builds the same case as bench_gpu.py's `gptj-train-gptx[-compile]` (bf16 autocast, fp32 weights, clipping
and gptx's AdamW step on torch's fused kernel), runs warm-up steps, then profiles a few steps with torch.profiler and prints
a table: GEMMs, attention, optimizer, elementwise/fused (Triton), reductions, copies, with each
category's share of kernel time and the wall time per step. Writes `gpu_profile.txt` to $OUT when set.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1]))

import bench_gpu  # noqa: E402
import torch  # noqa: E402

CATEGORIES = (  # first match wins, on the lower-cased kernel name
    ("attention (flash/SDPA)", ("flash", "fmha", "attention", "sdpa")),
    ("optimizer (fused AdamW)", ("adam", "multi_tensor", "foreach")),
    ("GEMM", ("gemm", "cutlass", "sm90_xmma", "nvjet", "cublas", "ampere_", "sm80_", "wgmma")),
    ("fused elementwise (Triton)", ("triton",)),
    ("reduction / norm", ("reduce", "norm", "softmax", "sum", "max")),
    ("copy / cast", ("copy", "memcpy", "memset", "cast", "fill")),
)


def category(name: str) -> str:
    low = name.lower()
    for label, needles in CATEGORIES:
        if any(n in low for n in needles):
            return label
    return "other elementwise"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--eager", action="store_true", help="no torch.compile")
    p.add_argument("--layers", type=int, default=None, help="GPT-J layers (default: all)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--top", type=int, default=20)
    args = p.parse_args(argv)

    device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    settings = bench_gpu.Settings(
        device=device,
        tiny=args.tiny,
        warmup=args.warmup,
        steps=args.steps,
        layers=args.layers,
        neox_layers=2,
        memory_fraction=0.93,
        time_budget_s=1e9,
        peak_tflops=None,
        compile_backend="aot_eager" if args.tiny else "inductor",
        chunk_logits=bench_gpu.TINY_CHUNK_LOGITS if args.tiny else None,
    )
    key = "gptj-train-gptx" if args.eager else "gptj-train-gptx-compile"
    case = next(c for c in bench_gpu.all_cases(args.tiny) if c.key == key)
    layers = args.layers or bench_gpu.full_layers("gptj", args.tiny)
    step, _ = bench_gpu.prepare_case(case, layers, settings)
    for _ in range(args.warmup):
        step()
    bench_gpu.synchronize(device)

    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        t0 = time.perf_counter()
        for _ in range(args.steps):
            step()
        bench_gpu.synchronize(device)
        wall = (time.perf_counter() - t0) / args.steps

    per_kernel: dict[str, float] = defaultdict(float)
    for evt in prof.key_averages():
        us = evt.device_time_total if device.type == "cuda" else evt.self_cpu_time_total
        if device.type == "cuda" and evt.device_type != torch.autograd.DeviceType.CUDA:
            continue
        if us > 0:
            per_kernel[evt.key] += us / args.steps
    total = sum(per_kernel.values()) or 1.0
    by_cat: dict[str, float] = defaultdict(float)
    for name, us in per_kernel.items():
        by_cat[category(name)] += us

    lines = [
        f"gptx GPT-J train step profile: {layers} layers, batch {case.batch} x {case.seq}, "
        f"{'eager' if args.eager else 'compiled'}, {torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}",
        f"wall {wall * 1e3:.1f} ms/step; kernel time {total / 1e3:.1f} ms/step",
        "",
        f"{'category':30s} {'ms/step':>9s} {'share':>7s}",
    ]
    for label, us in sorted(by_cat.items(), key=lambda kv: -kv[1]):
        lines.append(f"{label:30s} {us / 1e3:9.2f} {us / total:7.1%}")
    lines += ["", f"{'top kernels':90s} {'ms/step':>9s} {'share':>7s}"]
    for name, us in sorted(per_kernel.items(), key=lambda kv: -kv[1])[: args.top]:
        lines.append(f"{name[:90]:90s} {us / 1e3:9.2f} {us / total:7.1%}")
    text = "\n".join(lines) + "\n"
    print(text, end="")
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "gpu_profile.txt").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
