"""Step time around a checkpoint save: background (the default) against `--sync-checkpoints`, same run.

Both sides are the real `gptx train` loop (`trainer._Run.run()`, in this process, a fresh model_dir
each run), saving every `--every` steps; runs alternate (sync, async, async, sync, ...) so machine
noise hits both alike. The wall time between two consecutive train logs (`logging.log_steps` 1) is
one step's time as the loop sees it: the gap after a save step holds the part of the save the loop
waits for (all of it when synchronous; the staged copy in the background). Printed per side, as
medians over the runs:

  plain step          the steps at least `--settle` steps away from any save
  save step           the step gap that holds a save (steps every, 2 * every, ... except the last)
  next steps          the mean of the `--settle` steps after it (the background write runs then)
  write (s)           how long the write itself took (the `saved ... (X s)` line)
  run wall (s)        the whole loop, the end's wait for the last save included

    PYTHONPATH=. .venv/bin/python benchmarks/bench_async_checkpoint.py              # a few minutes
    PYTHONPATH=. .venv/bin/python benchmarks/bench_async_checkpoint.py --hidden 256 --layers 2 --runs 2
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_train import write_data  # noqa: E402  (the same synthetic HDF5 set as the loop benchmark)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def one_run(args: argparse.Namespace, data_dir: Path, model_dir: Path, sync: bool) -> dict[str, Any]:
    from gptx_cli import distributed
    from gptx_cli.config import load_run_spec
    from gptx_cli.train.checkpointer import Checkpointer
    from gptx_cli.train.metrics import MetricsLogger
    from gptx_cli.train.trainer import TrainOptions, _Run

    overrides = [
        f"train_dataloader.data_dir={data_dir}",
        f"train_dataloader.batch_size={args.batch}",
        "train_dataloader.shuffle=false",
        "logging.log_steps=1",
        f"loop.max_steps={args.steps}",
        f"checkpoint.steps={args.every}",
        f"model.vocab_size={args.vocab}",
        f"model.hidden_size={args.hidden}",
        f"model.num_heads={args.heads}",
        f"model.filter_size={4 * args.hidden}",
        f"model.rotary_dim={args.hidden // args.heads // 4}",
        f"model.max_position_embeddings={args.seq}",
        f"model.num_hidden_layers={args.layers}",
    ]
    spec = load_run_spec(REPO / "configs" / "tiny_gptj.yaml", overrides=overrides)
    spec.val_data, spec.loop.eval_frequency = None, None
    options = TrainOptions(
        model_dir=str(model_dir), console="plain", target_device="CPU", sync_checkpoints=sync
    )
    run = _Run(spec, options, distributed.Dist())
    marks: dict[int, float] = {}
    writes: list[float] = []
    original_log, original_finished = MetricsLogger.log_train, Checkpointer._finished

    def log_train(self: Any, step: int, record: dict[str, Any]) -> None:
        marks[step] = time.perf_counter()
        original_log(self, step, record)

    def finished(self: Any, step: int, path: Path, seconds: float, *, background: bool) -> None:
        writes.append(seconds)
        original_finished(self, step, path, seconds, background=background)

    MetricsLogger.log_train = log_train  # type: ignore[method-assign]
    Checkpointer._finished = finished  # type: ignore[method-assign]
    try:
        t0 = time.perf_counter()
        with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):  # the loop's console
            run.run()
        wall = time.perf_counter() - t0
    finally:
        MetricsLogger.log_train, Checkpointer._finished = original_log, original_finished  # type: ignore[method-assign]
    gap = {s: marks[s] - marks[s - 1] for s in marks if s - 1 in marks}
    # the saves with `settle` steps after them (a save at the end is the end's wait)
    saves = [s for s in range(args.every, args.steps - args.settle, args.every)]
    near = {s + k for s in [0, *saves, args.steps] for k in range(-args.settle, args.settle + 1)}
    plain = [t for s, t in gap.items() if s not in near]
    save_gaps = [gap[s + 1] for s in saves if s + 1 in gap]
    after = [statistics.mean(gap[s + k] for k in range(2, args.settle + 2) if s + k in gap) for s in saves]
    return {
        "plain": statistics.median(plain),
        "save": statistics.median(save_gaps),
        "after": statistics.median(after),
        "write": statistics.median(writes),
        "wall": wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--vocab", type=int, default=1024)
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--every", type=int, default=10, help="checkpoint.steps")
    parser.add_argument("--settle", type=int, default=3, help="steps after a save counted as 'next steps'")
    parser.add_argument("--runs", type=int, default=2, help="runs per side (alternating)")
    parser.add_argument("--dir", default=None, help="where the model_dirs go (default: a temporary dir)")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    results: dict[str, list[dict[str, Any]]] = {"sync": [], "async": []}
    order = [("sync", "async") if i % 2 == 0 else ("async", "sync") for i in range(args.runs)]
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        root = Path(tmp)
        write_data(root / "data", args.batch * (args.steps + 1), args.seq, args.vocab)
        for i, pair in enumerate(order):
            for side in pair:
                model_dir = root / f"{side}-{i}"
                results[side].append(one_run(args, root / "data", model_dir, sync=side == "sync"))
        ckpt = root / f"sync-0/checkpoint_{args.every}"
        size = sum(p.stat().st_size for p in ckpt.rglob("*") if p.is_file())
    load = os.getloadavg()
    print(
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: {cpu_name()}, "
        f"{os.cpu_count()} cores, torch {torch.__version__}, {os.environ['OMP_NUM_THREADS']} thread(s); "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at the end"
    )
    print(
        f"GPT-J hidden {args.hidden} x {args.layers} layers, batch {args.batch} x {args.seq}, fp32 AdamW; "
        f"checkpoint every {args.every} of {args.steps} steps, {size / 2**20:.0f} MiB each; "
        f"medians of {args.runs} alternating runs per side"
    )
    print("| side | plain step (s) | save step (s) | next steps (s) | write (s) | run wall (s) |")
    print("|---|---:|---:|---:|---:|---:|")
    for side, label in (("sync", "`--sync-checkpoints`"), ("async", "background (default)")):
        rows = results[side]
        cols = [statistics.median(r[k] for r in rows) for k in ("plain", "save", "after", "write", "wall")]
        print(f"| {label} | " + " | ".join(f"{c:.3f}" for c in cols[:4]) + f" | {cols[4]:.1f} |")


if __name__ == "__main__":
    main()
