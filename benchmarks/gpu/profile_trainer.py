"""Where does a `gptx train` loop iteration spend time beyond its step? Profile both.

    PYTHONPATH=. python3 benchmarks/gpu/profile_trainer.py --data DIR          # GPU, GPT-J-6B at 4 layers
    PYTHONPATH=. python3 benchmarks/gpu/profile_trainer.py --data DIR --tiny   # toy width on the CPU

DIR holds `train/` HDF5 at 2048 tokens per sample, e.g. from
`gptx preprocess --dataset python-docs --train-tokenizer 4096 --max-seq-length 2048`.

Runs the real trainer (`gptx_cli.train.trainer.train`) on configs/params_gptj_6B.yaml cut to
`--layers` layers (batch 4 x 2048, bf16), and profiles (1) one whole loop iteration at step `--at`
(from the end of the previous step to the end of this one: the data loader, the loop's bookkeeping and
the step) and (2) right after it, on the same model, optimizer and batch, the bare step alone: the
same `train.step.Stepper` call that bench_gpu.py and bench_train.py time. For each it prints the wall
time, the device's kernel time (its busy share of the wall time), the host-device synchronisations
and copies, and the top operators by host time, so that what the loop adds shows as a difference.
Also writes the two profiler tables to $OUT/trainer_profile.txt when OUT is set.

The profiler is attached from outside (the script wraps `Stepper.__call__`): nothing in gptx changes
for this measurement.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from gptx_cli.config import load_run_spec  # noqa: E402
from gptx_cli.train import step as step_mod  # noqa: E402
from gptx_cli.train import trainer as trainer_mod  # noqa: E402

SYNC_EVENTS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize")
COPY_EVENTS = ("cudaMemcpyAsync", "cudaMemcpy", "Memcpy HtoD", "Memcpy DtoH")


def summarize(name: str, prof: Any, wall_s: float, cuda: bool, top: int) -> str:
    events = prof.key_averages()
    kernel_us = sum(e.self_device_time_total for e in events) if cuda else 0.0
    lines = [f"== {name}: wall {wall_s * 1e3:.1f} ms"]
    if cuda:
        lines.append(
            f"   device kernel time {kernel_us / 1e3:.1f} ms ({kernel_us / 1e6 / wall_s:.0%} of wall)"
        )
    for label, names in (("syncs", SYNC_EVENTS), ("copies", COPY_EVENTS)):
        hits = [e for e in events if any(n in e.key for n in names)]
        if hits:
            detail = ", ".join(f"{e.key} x{e.count} {e.cpu_time_total / 1e3:.1f} ms" for e in hits)
            lines.append(f"   {label}: {detail}")
    lines.append(f"   {'top host operators (self time)':60s} {'ms':>8s} {'calls':>6s}")
    for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[:top]:
        lines.append(f"   {e.key[:60]:60s} {e.self_cpu_time_total / 1e3:8.2f} {e.count:6d}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="folder with train/ HDF5 at 2048 tokens per sample")
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--at", type=int, default=12, help="the step to profile (after compilation)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--tiny", action="store_true", help="hidden 256 on the CPU: checks the script")
    p.add_argument("--top", type=int, default=15)
    args = p.parse_args(argv)

    cuda = torch.cuda.is_available() and not args.tiny
    overrides = [
        f"model.num_hidden_layers={args.layers}",
        f"train_dataloader.data_dir={Path(args.data) / 'train'}",
        "train_dataloader.batch_size=4",
        "train_dataloader.num_workers=2",
        f"loop.max_steps={args.at + 1}",
        "logging.log_steps=1000",
    ]
    if args.tiny:
        overrides += [
            "model.hidden_size=256",
            "model.num_heads=4",
            "model.filter_size=1024",
            "model.rotary_dim=16",
            "model.vocab_size=4096",
            "precision.enabled=false",  # bf16 matmuls are slow on most CPUs
        ]
    spec = load_run_spec(REPO / "configs" / "params_gptj_6B.yaml", overrides=overrides)
    spec.val_data, spec.loop.eval_frequency, spec.checkpoint.steps = None, None, None

    activities = [torch.profiler.ProfilerActivity.CPU]
    if cuda:
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    reports: list[str] = []
    original = step_mod.Stepper.__call__
    calls = [0]
    state: dict[str, Any] = {}

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    def profiled_step(self: Any, batch: dict[str, torch.Tensor]) -> Any:
        calls[0] += 1
        if calls[0] < args.at - 1 or calls[0] > args.at:
            return original(self, batch)
        if calls[0] == args.at - 1:  # the iteration at `at` starts when this step ends
            out = original(self, batch)
            sync()
            state["prof"] = torch.profiler.profile(activities=activities)
            state["prof"].start()
            state["t0"] = time.perf_counter()
            return out
        out = original(self, batch)
        sync()
        wall = time.perf_counter() - state["t0"]
        state["prof"].stop()
        reports.append(
            summarize("gptx train loop iteration (loader + loop + step)", state["prof"], wall, cuda, args.top)
        )
        sync()
        with torch.profiler.profile(activities=activities) as prof:
            t0 = time.perf_counter()
            original(self, batch)
            sync()
            wall = time.perf_counter() - t0
        reports.append(summarize("bare Stepper call, same model and batch", prof, wall, cuda, args.top))
        return out

    step_mod.Stepper.__call__ = profiled_step  # type: ignore[method-assign]
    with tempfile.TemporaryDirectory() as model_dir:
        trainer_mod.train(
            spec,
            trainer_mod.TrainOptions(
                model_dir=model_dir,
                console="plain",
                target_device="GPU" if cuda else "CPU",
                compile=args.compile,
            ),
        )
    text = "\n\n".join(reports) + "\n"
    print(text, end="")
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "trainer_profile.txt").write_text(text)
    return 0 if len(reports) == 2 else 1


if __name__ == "__main__":
    sys.exit(main())
