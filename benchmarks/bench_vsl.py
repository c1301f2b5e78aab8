"""VSL (document-masked attention) vs plain packing: tokens/s of a training step on the same model and batch.

The batch is real: the Python standard library's documentation and module docstrings
(`gptx_cli.data.builtin_corpus`, the `python-docs` corpus), tokenized with GPT-2 (or, without the
tokenizer files, ~4 characters per token) and placed into VSL samples by `gptx_cli.data.vsl.VSLPacker`,
exactly as `gptx preprocess --use-vsl` does. Plain packing runs the same input_ids / labels / loss
mask without `position_ids` / `attention_span` (SDPA `is_causal`); each VSL implementation
(`gptx_cli.model.doc_attention.VSL_BACKENDS`) runs them with. Runs alternate between the variants so
machine noise hits all alike. A train step is lm_loss + backward + AdamW step. Prints a table.

    .venv/bin/python benchmarks/bench_vsl.py                              # small CPU sizes
    .venv/bin/python benchmarks/bench_vsl.py --hidden 256 --layers 4 --seq 512 --batch 4 --repeats 5
    .venv/bin/python benchmarks/bench_vsl.py --device cuda --dtype bfloat16 --hidden 4096 --layers 2 \\
        --heads 16 --seq 2048 --batch 4 --vocab 50400       # GPT-J-6B width (on a GPU)
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import statistics
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_model import gptx_optimizer, timed  # noqa: E402


def document_tokens(vocab: int, max_docs: int) -> tuple[np.ndarray, np.ndarray, str]:
    """(tokens, lengths, what) of real documents (no EOS: the VSL packer places it); ids folded into
    `vocab` above 0, the EOS id."""
    from gptx_cli.data.builtin_corpus import iter_stdlib_documents
    from gptx_cli.data.pack import concat_documents

    texts = [d["text"] for _, d in zip(range(max_docs), iter_stdlib_documents(), strict=False)]
    shared = Path(os.environ.get("GPTX_SHARED", Path(__file__).resolve().parents[2] / "shared"))
    tok_dir = shared / "assets" / "tokenizers"
    if (tok_dir / "gpt2").is_dir():
        from gptx_cli.data.tokenizer import load_tokenizer

        tok = load_tokenizer("gpt2", tokenizer_dir=str(tok_dir))
        docs = [np.asarray(tok.encode(t), dtype=np.int32) % (vocab - 1) + 1 for t in texts]
        what = "GPT-2 tokens"
    else:
        rng = np.random.default_rng(0)
        docs = [rng.integers(1, vocab, size=max(1, len(t) // 4), dtype=np.int32) for t in texts]
        what = "length ~ chars/4"
    tokens, lengths = concat_documents(docs)
    return tokens, lengths, f"{len(texts)} python-docs documents ({what})"


def vsl_batch(args: argparse.Namespace, device: str) -> tuple[dict[str, torch.Tensor], str]:
    from gptx_cli.data.vsl import VSLPacker

    tokens, lengths, what = document_tokens(args.vocab, args.docs)
    packer = VSLPacker(args.seq, eos_id=0, pad_id=0, min_sequence_len=10)
    samples = np.concatenate([packer.add_documents(tokens, lengths), packer.finish()])
    # Skip the pieces of msl + 1 tokens cut from long documents (a full sample of one document) when
    # there are enough samples of several documents: those are what VSL is about.
    multi = samples[(samples[:, 4] == 0).sum(1) > 1]
    pick = multi if len(multi) >= args.batch else samples
    pick = pick[: args.batch]
    batch = {k: torch.from_numpy(pick[:, i].astype(np.int64)).to(device) for i, k in enumerate(
        ("input_ids", "attention_mask", "labels", "attention_span", "position_ids"))}  # fmt: skip
    padding = (pick[:, 4] == 0) & (pick[:, 3] == 0) & (pick[:, 1] == 0)  # no document has 1 token
    docs_per_row = ((pick[:, 4] == 0) & ~padding).sum(1)
    fill = float((pick[:, 1] == 1).mean())
    return batch, f"{what}; batch rows hold {docs_per_row.tolist()} documents, {fill:.0%} loss tokens"


def build_model(args: argparse.Namespace, device: str, dtype: torch.dtype) -> Any:
    from gptx_cli.api import build_model as build
    from gptx_cli.config.spec import ModelConfig

    neox = args.family == "gpt-neox"
    cfg = ModelConfig(
        name=args.family,
        vocab_size=args.vocab,
        hidden_size=args.hidden,
        num_hidden_layers=args.layers,
        num_heads=args.heads,
        filter_size=4 * args.hidden,
        max_position_embeddings=max(args.seq, 2048),
        rotary_dim=args.hidden // args.heads // 4,
        use_untied_layer_norm=neox,
        use_projection_bias_in_attention=neox,
        share_embedding_weights=False,
    )
    return build(cfg, device=device, seed=0).to(dtype)


def main() -> None:
    from gptx_cli.model.doc_attention import VSL_BACKENDS
    from gptx_cli.model.loss import lm_loss

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--family", choices=["gptj", "gpt-neox"], default="gptj")
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=1024)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--docs", type=int, default=400, help="documents to pack from the python-docs corpus")
    ap.add_argument("--repeats", type=int, default=5, help="timed runs per variant (after 1 warm-up)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave torch's default)")
    args = ap.parse_args()
    import warnings

    warnings.filterwarnings("ignore", message=".*flex_attention called without torch.compile.*")
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    batch, described = vsl_batch(args, args.device)
    model = build_model(args, args.device, dtype)
    opt = gptx_optimizer(model)
    ids, labels, mask = batch["input_ids"], batch["labels"], batch["attention_mask"]
    vsl_inputs = {"position_ids": batch["position_ids"], "attention_span": batch["attention_span"]}
    autocast = (
        torch.autocast(args.device.split(":")[0], dtype=dtype)
        if dtype != torch.float32
        else contextlib.nullcontext()
    )

    def train_step(extra: dict[str, Any]) -> None:
        with autocast:
            out = lm_loss(model, ids, labels, mask, **extra)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()

    def forward(extra: dict[str, Any]) -> None:
        with torch.no_grad(), autocast:
            lm_loss(model, ids, labels, mask, **extra)

    variants = [("plain packing (SDPA is_causal)", None)] + [(f"VSL {b}", b) for b in VSL_BACKENDS]
    tokens = ids.numel()
    rows: list[tuple[str, str, float | None, str]] = []
    for mode, fn in (("train step", train_step), ("forward + loss", forward)):
        model.train(mode == "train step")
        runnable: list[tuple[str, str | None]] = []
        skipped: list[tuple[str, str, float | None, str]] = []
        for name, backend in variants:
            model.vsl_attention = backend or "auto"
            used = model.vsl_backend(args.device) if backend else None
            if backend and used != backend:
                skipped.append((mode, name, None, f"runs {used} here"))
                continue
            runnable.append((name, backend))
        times: dict[str, list[float]] = {name: [] for name, _ in runnable}
        for rep in range(args.repeats + 1):
            for name, backend in runnable:
                model.vsl_attention = backend or "auto"
                t = timed(functools.partial(fn, vsl_inputs if backend else {}), args.device)
                if rep:  # the first round is the warm-up
                    times[name].append(t)
        base: float = tokens / statistics.median(times[runnable[0][0]])
        for name, _ in runnable:
            tps = tokens / statistics.median(times[name])
            rows.append((mode, name, tps, f"{tps / base:.2f}x"))
        rows += skipped
    model.vsl_attention = "auto"
    model.train()
    print(
        f"device={args.device} dtype={args.dtype} family={args.family} batch={args.batch} seq={args.seq} "
        f"hidden={args.hidden} layers={args.layers} heads={args.heads} vocab={args.vocab} "
        f"threads={torch.get_num_threads()} (median of {args.repeats}); auto picks "
        f"{model.vsl_backend(args.device)} for training here"
    )
    print(f"data: {described}")
    print("| mode | variant | tokens/s | vs plain |\n|---|---|---:|---:|")
    for mode, name, value, ratio in rows:
        print(f"| {mode} | {name} | {'-' if value is None else f'{value:,.0f}'} | {ratio} |")


if __name__ == "__main__":
    main()
