"""Training-loop tokens/s: the `gptx train` step loop vs a plain transformers + torch.optim.AdamW loop.

Both train the same GPT-J shape on the same batches (one HDF5 file written here) on CPU, in one
process. The gptx side is the real trainer (`gptx_cli.train.trainer.train`: data loader, global-batch
loss weighting, ModelZoo AdamW, schedule, clipping, metrics.jsonl); its tokens/s are the median of the
logged windows after the first. The plain side is the usual Hugging Face loop (forward with the
same masked cross-entropy, backward, clip_grad_norm_, torch.optim.AdamW(fused=True), the Trainer's
default) timed over the same windows.
Runs alternate (gptx, plain, gptx, ...) so machine noise hits both alike. Prints one table with the
gptx / plain ratio (> 1: gptx is faster).

    .venv/bin/python benchmarks/bench_train.py                      # defaults: tiny, about a minute
    .venv/bin/python benchmarks/bench_train.py --hidden 256 --layers 4 --seq 256 --steps 60 --threads 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def write_data(path: Path, n: int, seq: int, vocab: int) -> None:
    from gptx_cli.data.hdf5 import mark_complete, write_sample_file

    rng = np.random.default_rng(0)
    tokens = rng.integers(0, vocab, size=(n, seq + 1))
    samples = np.stack([tokens[:, :-1], np.ones((n, seq), dtype=np.int64), tokens[:, 1:]], axis=1)
    path.mkdir(parents=True)
    write_sample_file(path / "data-0.h5", samples.astype(np.int32))
    mark_complete(path)


def run_gptx(args: argparse.Namespace, data_dir: Path, model_dir: Path) -> float:
    from gptx_cli.config import load_run_spec
    from gptx_cli.train.trainer import TrainOptions, train

    repo = Path(__file__).resolve().parents[1]
    spec = load_run_spec(
        repo / "configs" / "tiny_gptj.yaml",
        overrides=[
            f"model.vocab_size={args.vocab}",
            f"model.hidden_size={args.hidden}",
            f"model.num_hidden_layers={args.layers}",
            f"model.num_heads={args.heads}",
            f"model.filter_size={4 * args.hidden}",
            f"model.rotary_dim={args.hidden // args.heads // 4}",
            f"model.max_position_embeddings={args.seq}",
            f"train_dataloader.data_dir={data_dir}",
            f"train_dataloader.batch_size={args.batch}",
            "train_dataloader.shuffle=false",
            f"logging.log_steps={args.window}",
            f"loop.max_steps={args.steps}",
        ],
    )
    spec.val_data, spec.loop.eval_frequency, spec.checkpoint.steps = None, None, None
    train(spec, TrainOptions(model_dir=str(model_dir), console="plain"))
    lines = [json.loads(line) for line in (model_dir / "metrics.jsonl").read_text().splitlines()]
    rates = [r["tokens_per_s"] for r in lines if r["split"] == "train"][1:]  # first window: warm-up
    return statistics.median(rates)


def run_plain(args: argparse.Namespace, data_dir: Path) -> float:
    import h5py
    import transformers

    torch.manual_seed(0)
    cfg = transformers.GPTJConfig(
        vocab_size=args.vocab,
        n_embd=args.hidden,
        n_layer=args.layers,
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
    return statistics.median(rates[1:])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--vocab", type=int, default=1024)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--window", type=int, default=10, help="Steps per timing window.")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads for both loops.")
    p.add_argument("--repeats", type=int, default=2, help="Alternating runs of each loop (median reported).")
    args = p.parse_args()
    if args.steps < 2 * args.window:
        p.error("--steps must cover at least two windows (the first is warm-up)")
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        write_data(data_dir, args.steps * args.batch, args.seq, args.vocab)
        gptx_rates, plain_rates = [], []
        for i in range(args.repeats):  # alternate so machine noise hits both loops alike
            gptx_rates.append(run_gptx(args, data_dir, Path(tmp) / f"model_dir_{i}"))
            plain_rates.append(run_plain(args, data_dir))
        gptx, plain = statistics.median(gptx_rates), statistics.median(plain_rates)
    shape = f"GPT-J hidden {args.hidden} x {args.layers} layers, batch {args.batch} x {args.seq}, vocab {args.vocab}"
    print(
        f"\ntraining loop tokens/s on CPU ({shape}, {args.threads} thread(s), median of {args.window}-step windows, {args.repeats} alternating runs each)"
    )
    print(
        f"| loop | tokens/s |\n|---|---|\n| gptx train | {gptx:,.0f} |\n| transformers + torch AdamW | {plain:,.0f} |"
    )
    print(f"| ratio gptx / plain | {gptx / plain:.2f} |")


if __name__ == "__main__":
    main()
