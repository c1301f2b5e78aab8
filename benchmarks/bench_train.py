"""Training-loop tokens/s: the `gptx train` loop against its bare step, in the same run.

Both sides use the same components, built by the trainer itself (`gptx_cli.train.trainer._Run`): the
same model, optimizer, schedule and `train.step.Stepper`. The loop side is the real `run()` (data
loader, CheckLoss reads, metrics.jsonl, schedule, throughput window); its tokens/s are the median of
its logged windows after the first. The bare side calls the same `Stepper` on batches fetched
beforehand, timed over the same windows, reading the loss once per window as the loop's log step
does. Runs alternate (loop, bare, bare, loop, loop, ...) so machine noise and drift hit both alike
and neither side is always the process's first (cold) run. The ratio loop / bare is what the loop
costs (target >= 0.97 on CPU, within 5% on a GPU), as the ratio of the two sides' medians and as the
median of the ratios of each loop run to the bare run next to it (steadier under passing load). `--hf` adds the usual Hugging
Face loop (transformers GPT-J, masked cross-entropy, clip_grad_norm_, torch AdamW(fused=True)) for
the CPU shapes. `--fp8` adds the loop with torchao float8 (H100/H200 only) and compares its loss.

On a CPU shared with other work the alternating ratio is noisy; the last row measures the loop's cost
on the same steps instead: the share of the loop's wall and CPU time (windows after the first) spent
inside the step (the rest is the loader, the CheckLoss reads, metrics and schedule). Only on the CPU:
on a GPU the step returns before the device is done.

    .venv/bin/python benchmarks/bench_train.py                           # tiny CPU sizes, about a minute
    .venv/bin/python benchmarks/bench_train.py --hidden 256 --layers 4 --seq 256 --threads 2 --hf
    # GPU: GPT-J-6B cut to 4 layers, batch 4 x 2048, bf16, compiled (benchmarks/gpu/trainer_slice.sh)
    python benchmarks/bench_train.py --config configs/params_gptj_6B.yaml --layers 4 --seq 2048 \\
        --batch 4 --device cuda --bf16 --compile --data DIR/train --steps 40 --window 10

Checkpoint writes are switched off (`--save` turns them on): they are outside the timed windows
anyway, and GPT-J-6B's final checkpoint (72 GB with the optimizer state) would not fit a small disk.
Prints one markdown table; with $OUT set also writes bench_train.json there.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def write_data(path: Path, n: int, seq: int, vocab: int) -> None:
    from gptx_cli.data.hdf5 import mark_complete, write_sample_file

    rng = np.random.default_rng(0)
    tokens = rng.integers(0, vocab, size=(n, seq + 1))
    samples = np.stack([tokens[:, :-1], np.ones((n, seq), dtype=np.int64), tokens[:, 1:]], axis=1)
    path.mkdir(parents=True)
    write_sample_file(path / "data-0.h5", samples.astype(np.int32))
    mark_complete(path)


def load_spec(args: argparse.Namespace, data_dir: Path) -> Any:
    from gptx_cli.config import load_run_spec

    overrides = [
        f"train_dataloader.data_dir={data_dir}",
        f"train_dataloader.batch_size={args.batch}",
        "train_dataloader.shuffle=false",
        f"logging.log_steps={args.window}",
        f"loop.max_steps={args.steps}",
    ]
    if args.config is None:  # the tiny CPU shape
        overrides += [
            f"model.vocab_size={args.vocab}",
            f"model.hidden_size={args.hidden}",
            f"model.num_heads={args.heads}",
            f"model.filter_size={4 * args.hidden}",
            f"model.rotary_dim={args.hidden // args.heads // 4}",
            f"model.max_position_embeddings={args.seq}",
        ]
    if args.layers:
        overrides.append(f"model.num_hidden_layers={args.layers}")
    if args.bf16:
        overrides += ["precision.enabled=true", "precision.fp16_type=bfloat16"]
    if args.device == "cuda":
        overrides.append("train_dataloader.num_workers=2")
    overrides += args.set
    spec = load_run_spec(Path(args.config or REPO / "configs" / "tiny_gptj.yaml"), overrides=overrides)
    spec.val_data, spec.loop.eval_frequency, spec.checkpoint.steps = None, None, None
    spec.checkpoint.save_initial_checkpoint = False
    return spec


def make_run(args: argparse.Namespace, data_dir: Path, model_dir: Path, fp8: bool = False) -> Any:
    """The trainer's own run object (components built by `_prepare()` inside run())."""
    from gptx_cli import distributed
    from gptx_cli.train.trainer import TrainOptions, _Run

    options = TrainOptions(
        model_dir=str(model_dir),
        console="plain",
        target_device="GPU" if args.device == "cuda" else "CPU",
        compile=args.compile or None,
        fp8=fp8,
    )
    dist = distributed.Dist(device="cuda:0" if args.device == "cuda" else "cpu")
    return _Run(load_spec(args, data_dir), options, dist)


def without_saves(run: Any) -> None:
    """Checkpoint writes off (they are outside the timed windows; see the module docstring)."""
    original = run._build

    def build() -> None:
        original()
        run.ckpt.save = lambda step, samples_seen: None

    run._build = build


def run_loop(args: argparse.Namespace, data_dir: Path, model_dir: Path, fp8: bool = False) -> dict[str, Any]:
    from gptx_cli.train.metrics import ThroughputWindow
    from gptx_cli.train.step import Stepper

    run = make_run(args, data_dir, model_dir, fp8)
    if not args.save:
        without_saves(run)
    # At each window's end also the process's CPU time, and the wall and CPU time spent inside the
    # step so far: what the loop adds around the step, measured on the same steps (robust to load).
    marks: list[tuple[float, float, float, float]] = []  # (wall, cpu, wall in step, cpu in step)
    in_step = [0.0, 0.0]
    original_rates, original_call = ThroughputWindow.rates, Stepper.__call__

    def rates_and_marks(self: Any, step: int) -> Any:
        marks.append((time.perf_counter(), time.process_time(), in_step[0], in_step[1]))
        return original_rates(self, step)

    def timed_step(self: Any, batch: Any) -> Any:
        wall, cpu = time.perf_counter(), time.process_time()
        out = original_call(self, batch)
        in_step[0] += time.perf_counter() - wall
        in_step[1] += time.process_time() - cpu
        return out

    ThroughputWindow.rates = rates_and_marks  # type: ignore[method-assign]
    Stepper.__call__ = timed_step  # type: ignore[method-assign]
    try:
        result = run.run()
    finally:
        ThroughputWindow.rates, Stepper.__call__ = original_rates, original_call  # type: ignore[method-assign]
    first, last = marks[0], marks[-1]  # windows after the first
    cpu_marks = [m[1] for m in marks]
    lines = [json.loads(line) for line in (model_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in lines if r["split"] == "train"]
    rates = [r["tokens_per_s"] for r in train][1:]  # first window: warm-up (and compilation)
    mfus = [r["mfu"] for r in train if "mfu" in r][1:]
    return {
        "tokens_per_s": statistics.median(rates),
        "mfu": statistics.median(mfus) if mfus else None,
        "losses": result.train_losses,
        "memory_gib": max((r.get("memory_gib", 0.0) for r in train), default=None),
        "tokens_per_cpu_s": cpu_rate([0.0, *cpu_marks], args.window * run.tokens_per_step),
        "step_share_wall": (last[2] - first[2]) / (last[0] - first[0]),
        "step_share_cpu": (last[3] - first[3]) / (last[1] - first[1]),
    }


def cpu_rate(marks: list[float], tokens_per_window: int) -> float:
    """Median tokens per CPU-second of the windows after the first (marks: CPU time at window ends)."""
    return statistics.median(tokens_per_window / (b - a) for a, b in zip(marks[1:], marks[2:], strict=False))


def run_bare(args: argparse.Namespace, data_dir: Path, model_dir: Path) -> dict[str, Any]:
    """The same components, the same Stepper, on batches fetched beforehand; no loop around it."""
    run = make_run(args, data_dir, model_dir)
    loader, start, _ = run._prepare()
    batches = []
    for batch in loader:
        batches.append(batch)
        if len(batches) == args.steps:
            break
    cuda = args.device == "cuda"
    if cuda:  # as the loader does with pin_memory: the batch copies run asynchronously
        batches = [{k: v.pin_memory() for k, v in b.items()} for b in batches]
    rates: list[float] = []
    losses: list[float] = []
    cpu_marks: list[float] = []
    t0 = time.perf_counter()
    for i, batch in enumerate(batches):
        out = run.stepper(batch)
        if i == 0:  # as the loop does after its first step
            gc.collect()
            gc.freeze()
        if (i + 1) % args.window == 0:
            losses.append(float(out.loss))  # one read per window, as the loop's log step
            cpu_marks.append(time.process_time())
            now = time.perf_counter()
            rates.append(args.window * run.tokens_per_step / (now - t0))
            t0 = now
    gc.unfreeze()
    window = run.log.window if run.log is not None else None
    if run.log is not None:
        run.log.close()
    rate = statistics.median(rates[1:])
    mfu = None
    if window is not None and window.flops_per_token and window.peak_tflops:
        mfu = rate * window.flops_per_token / 1e12 / window.peak_tflops
    return {
        "tokens_per_s": rate,
        "mfu": mfu,
        "losses": losses,
        "memory_gib": None,
        "tokens_per_cpu_s": cpu_rate([0.0, *cpu_marks], args.window * run.tokens_per_step),
    }


def run_hf(args: argparse.Namespace, data_dir: Path) -> dict[str, Any]:
    """The usual Hugging Face loop on the same batches (CPU shapes)."""
    import h5py
    import transformers

    torch.manual_seed(0)
    cfg = transformers.GPTJConfig(
        vocab_size=args.vocab,
        n_embd=args.hidden,
        n_layer=args.layers or 2,
        n_head=args.heads,
        n_inner=4 * args.hidden,
        rotary_dim=args.hidden // args.heads // 4,
        n_positions=args.seq,
        activation_function="gelu",
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        tie_word_embeddings=False,
    )
    model = transformers.GPTJForCausalLM(cfg).train()
    # fused=True: the Hugging Face Trainer's default optimizer on torch >= 2.8 (adamw_torch_fused)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, eps=1e-6, weight_decay=0.1, fused=True)
    with h5py.File(data_dir / "data-0.h5", "r") as f:
        data = torch.from_numpy(f["data"][:].astype(np.int64))
    rates, t0 = [], time.perf_counter()
    for step in range(args.steps):
        batch = data[step * args.batch : (step + 1) * args.batch]
        inputs, mask, labels = batch[:, 0], batch[:, 1], batch[:, 2]
        logits = model(inputs).logits.float()
        ce = torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="none")
        loss = (ce * mask.flatten()).sum() / mask.sum()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if (step + 1) % args.window == 0:
            now = time.perf_counter()
            rates.append(args.window * args.batch * args.seq / (now - t0))
            t0 = now
    return {"tokens_per_s": statistics.median(rates[1:]), "mfu": None, "losses": [], "memory_gib": None,
            "tokens_per_cpu_s": None}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=None, help="ModelZoo YAML (default: configs/tiny_gptj.yaml, shrunk)")
    p.add_argument("--data", default=None, help="train HDF5 dir (default: random tokens written here)")
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--layers", type=int, default=None, help="model.num_hidden_layers (default: the config's)")
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--vocab", type=int, default=1024)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--window", type=int, default=10, help="Steps per timing window.")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (CPU).")
    p.add_argument("--repeats", type=int, default=2, help="Alternating runs of each side (median reported).")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (precision.fp16_type bfloat16)")
    p.add_argument("--compile", action="store_true", help="gptx train --compile on both sides")
    p.add_argument("--fp8", action="store_true", help="also the loop with --fp8 (H100/H200, torchao)")
    p.add_argument("--hf", action="store_true", help="also the plain Hugging Face loop (CPU shapes)")
    p.add_argument("--save", action="store_true", help="keep the loop's checkpoint writes")
    p.add_argument(
        "--skip-memory-guard",
        action="store_true",
        help="do not let the trainer's memory guard refuse the run (its estimate for GPT-J-6B at 28 "
        "layers, 158 GiB, is above the 112 GiB bench_gpu.py measured; the row then shows the real peak)",
    )
    p.add_argument("--no-bare", dest="bare", action="store_false", help="time only the loop")
    p.add_argument("--set", action="append", default=[], help="config override key.path=value (last wins)")
    args = p.parse_args()
    if args.steps < 2 * args.window:
        p.error("--steps must cover at least two windows (the first is warm-up)")
    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    if args.skip_memory_guard:
        from gptx_cli.train import memory_guard

        memory_guard.check_memory = lambda *a, **k: None  # type: ignore[assignment]
        print("note: the trainer's memory guard is off for this benchmark (--skip-memory-guard)")
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    rows: dict[str, list[dict[str, Any]]] = {"loop": [], "bare": [], "fp8": [], "hf": []}
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(args.data) if args.data else Path(tmp) / "data"
        if not args.data:
            write_data(data_dir, args.steps * args.batch, args.seq, args.vocab)
        for i in range(args.repeats):  # alternate so machine noise hits both sides alike
            # ... in the order loop, bare, bare, loop, loop, ...: neither side is always the first run
            # of the process (cold) nor always the one after the other (drift)
            if args.bare and i % 2:
                rows["bare"].append(run_bare(args, data_dir, Path(tmp) / f"bare_{i}"))
            rows["loop"].append(run_loop(args, data_dir, Path(tmp) / f"loop_{i}"))
            if args.bare and not i % 2:
                rows["bare"].append(run_bare(args, data_dir, Path(tmp) / f"bare_{i}"))
            if args.fp8:
                rows["fp8"].append(run_loop(args, data_dir, Path(tmp) / f"fp8_{i}", fp8=True))
            if args.hf:
                rows["hf"].append(run_hf(args, data_dir))
            if args.device == "cuda":
                torch.cuda.empty_cache()

    def median(side: str, key: str) -> float | None:
        values = [r[key] for r in rows[side] if r[key] is not None]
        return statistics.median(values) if values else None

    loop, bare = median("loop", "tokens_per_s"), median("bare", "tokens_per_s")
    assert loop is not None
    shape = (
        f"{args.config or 'tiny_gptj'}"
        + (f" at {args.layers} layers" if args.layers else "")
        + f", batch {args.batch} x {args.seq}, {'bf16 autocast' if args.bf16 else 'fp32'}"
        + (", compiled" if args.compile else "")
    )
    device = (
        torch.cuda.get_device_name() if args.device == "cuda" else f"CPU, {torch.get_num_threads()} thread(s)"
    )
    print(f"\n{started}: training tokens/s on {device}, torch {torch.__version__} ({shape}; median of "
          f"{args.window}-step windows after the first, {args.repeats} alternating runs each)")  # fmt: skip
    print("| side | tokens/s | tokens / CPU-s | MFU | peak memory GiB |\n|---|---:|---:|---:|---:|")
    table: list[tuple[str, str]] = [("loop", "`gptx train` loop")]
    table += [("bare", "bare `Stepper` (same components)")] if args.bare else []
    table += [("fp8", "`gptx train --fp8` loop")] if args.fp8 else []
    table += [("hf", "transformers + torch AdamW loop")] if args.hf else []
    for side, label in table:
        rate, mfu = median(side, "tokens_per_s"), median(side, "mfu")
        mem = median(side, "memory_gib") if side in ("loop", "fp8") else None
        cpu = median(side, "tokens_per_cpu_s")
        print(
            f"| {label} | {rate:,.0f} | {f'{cpu:,.0f}' if cpu else '-'} | {f'{mfu:.1%}' if mfu else '-'} "
            f"| {f'{mem:.1f}' if mem else '-'} |"
        )
    if bare is not None:
        cpu_ratio = median("loop", "tokens_per_cpu_s") / median("bare", "tokens_per_cpu_s")  # type: ignore[operator]
        print(f"| ratio loop / bare | {loop / bare:.3f} | {cpu_ratio:.3f} |  |  |")
        # Each loop run against the bare run next to it (same moment, same machine state): the median
        # of these pairs is steadier than the ratio of the medians when other work comes and goes.
        pairs = list(zip(rows["loop"], rows["bare"], strict=True))
        pair_wall = statistics.median(a["tokens_per_s"] / b["tokens_per_s"] for a, b in pairs)
        pair_cpu = statistics.median(a["tokens_per_cpu_s"] / b["tokens_per_cpu_s"] for a, b in pairs)
        print(
            f"| ratio loop / bare, median of the {len(pairs)} pairs | {pair_wall:.3f} | {pair_cpu:.3f} |  |  |"
        )
    if args.device == "cpu":  # on a GPU the step returns before the device is done: no such split
        share_wall, share_cpu = median("loop", "step_share_wall"), median("loop", "step_share_cpu")
        print(f"| the loop's time inside the step (same run) | {share_wall:.3f} | {share_cpu:.3f} |  |  |")
    summary: dict[str, Any] = {"started": started, "device": device, "torch": torch.__version__,
                               "shape": shape, "args": vars(args), "rows": rows, "loop_over_bare": loop / bare if bare else None}  # fmt: skip
    if args.fp8:
        fp8 = median("fp8", "tokens_per_s")
        assert fp8 is not None
        last = max(1, args.steps // 5)  # the loss over the last fifth of the steps
        bf16_loss = statistics.mean(rows["loop"][0]["losses"][-last:])
        fp8_loss = statistics.mean(rows["fp8"][0]["losses"][-last:])
        print(f"| ratio fp8 / bf16 loop | {fp8 / loop:.3f} |  |  |  |")
        print(f"| mean loss of steps {args.steps - last + 1}-{args.steps}: bf16 {bf16_loss:.4f}, fp8 {fp8_loss:.4f} | "
              f"{(fp8_loss - bf16_loss) / bf16_loss:+.2%} |  |  |  |")  # fmt: skip
        summary.update(fp8_over_bf16=fp8 / loop, loss_bf16=bf16_loss, loss_fp8=fp8_loss)
    if args.hf:
        hf = median("hf", "tokens_per_s")
        assert hf is not None
        print(f"| ratio loop / transformers | {loop / hf:.2f} |  |  |  |")
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "bench_train.json").write_text(json.dumps(summary, indent=1, default=str))


if __name__ == "__main__":
    main()
