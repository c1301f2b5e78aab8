"""Training-step and forward tokens/s: gptx vs transformers on the same small GPT-J and GPT-NeoX.

Both models hold the same weights (converted with gptx_cli.model.hf), see the same batches in the same
dtype, in one process; runs alternate (gptx, HF, gptx, HF, ...) so machine noise hits both alike. A
training step is forward + loss + backward + AdamW step. Prints a table with the gptx/HF ratio.

    .venv/bin/python benchmarks/bench_model.py                       # defaults: small CPU sizes
    .venv/bin/python benchmarks/bench_model.py --hidden 256 --layers 4 --seq 256 --batch 4 --repeats 5
    .venv/bin/python benchmarks/bench_model.py --device cuda --dtype bfloat16 --hidden 1024 --seq 1024
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch


def build_hf(family: str, args: argparse.Namespace) -> Any:
    """The transformers model (fresh weights, seed 0) for the benchmark's small config; also bench_eval's."""
    import transformers

    torch.manual_seed(0)
    if family == "gptj":
        gptj_kwargs: dict[str, Any] = dict(
            vocab_size=args.vocab,
            n_embd=args.hidden,
            n_layer=args.layers,
            n_head=args.heads,
            rotary_dim=args.hidden // args.heads // 4,
            n_positions=args.seq,
            bos_token_id=0,
            eos_token_id=0,
        )
        return transformers.GPTJForCausalLM(transformers.GPTJConfig(**gptj_kwargs))
    neox_kwargs: dict[str, Any] = dict(
        vocab_size=args.vocab,
        hidden_size=args.hidden,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        intermediate_size=4 * args.hidden,
        max_position_embeddings=args.seq,
        rotary_pct=0.25,
    )
    return transformers.GPTNeoXForCausalLM(transformers.GPTNeoXConfig(**neox_kwargs))


def build_pair(family: str, args: argparse.Namespace, device: str, dtype: torch.dtype):
    from gptx_cli.model.hf import model_config_from_hf, to_gptx
    from gptx_cli.model.transformer import Transformer

    hf = build_hf(family, args)
    cfg = model_config_from_hf(hf.config.to_dict())
    sd = hf.state_dict()
    ours = Transformer(cfg)
    ours.load_state_dict(dict(to_gptx(cfg, sd.keys(), sd.__getitem__)))
    return ours.to(device, dtype), hf.to(device, dtype)


def gptx_stepper(model, opt, device: str):
    """gptx's own train step (`train.step.Stepper`, what `gptx train` runs): lm_loss, backward,
    clipping at 1.0 and the optimizer step, on one batch."""
    from gptx_cli.config.spec import PrecisionSpec
    from gptx_cli.train.step import LossModule, Stepper

    module = LossModule(model, "num_tokens", 1.0)
    return Stepper(module, opt, device=device, precision=PrecisionSpec(max_gradient_norm=1.0))


def train_step_gptx(stepper, batch) -> None:
    stepper(batch)


def train_step_hf(model, opt, inputs, labels) -> None:
    # The same loss as lm_loss with a full mask: mean token cross-entropy in fp32.
    logits = model(inputs).logits
    loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), labels.flatten())
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()


def gptx_optimizer(model):
    from gptx_cli.config.spec import OptimizerSpec
    from gptx_cli.model.init import optimizer_param_groups
    from gptx_cli.train.optim import build_optimizer

    opt = build_optimizer(OptimizerSpec("AdamW", {}), optimizer_param_groups(model, model.cfg))
    for group in opt.param_groups:  # the trainer's schedule sets it
        group["lr"] = 1e-4
    return opt


def forward(model, inputs) -> None:
    with torch.no_grad():
        model(inputs)


def timed(fn: Callable[[], None], device: str) -> float:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--family", choices=["gptj", "gpt-neox", "both"], default="both")
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=1024)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=5, help="timed runs per model and mode (after 1 warm-up)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave torch's default)")
    ap.add_argument(
        "--compile",
        action="store_true",
        help="also time a train step of gptx with compiled blocks (gptx --compile)",
    )
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    families = ["gptj", "gpt-neox"] if args.family == "both" else [args.family]
    ids = torch.randint(0, args.vocab, (args.batch, args.seq + 1), device=args.device)
    inputs, labels = ids[:, :-1], ids[:, 1:]
    mask = torch.ones_like(labels)
    tokens = args.batch * args.seq
    rows = []
    for family in families:
        ours, hf = build_pair(family, args, args.device, dtype)
        opt_ours = gptx_optimizer(ours)
        opt_hf = torch.optim.AdamW(hf.parameters(), lr=1e-4, fused=True)

        batch = {"input_ids": inputs, "labels": labels, "attention_mask": mask}
        step_ours = functools.partial(train_step_gptx, gptx_stepper(ours, opt_ours, args.device), batch)
        step_hf = functools.partial(train_step_hf, hf, opt_hf, inputs, labels)
        fwd_ours = functools.partial(forward, ours, inputs)
        fwd_hf = functools.partial(forward, hf, inputs)
        for mode, fn_ours, fn_hf in (("train step", step_ours, step_hf), ("forward", fwd_ours, fwd_hf)):
            ours.train(mode == "train step")
            hf.train(mode == "train step")
            fn_ours(), fn_hf()  # warm-up
            t_ours, t_hf = [], []
            for _ in range(args.repeats):  # alternate so load changes hit both
                t_ours.append(timed(fn_ours, args.device))
                t_hf.append(timed(fn_hf, args.device))
            tps_ours, tps_hf = tokens / statistics.median(t_ours), tokens / statistics.median(t_hf)
            rows.append((family, mode, tps_ours, tps_hf, tps_ours / tps_hf))
        if args.compile:
            from gptx_cli.train.parallel import compile_model

            ours.train()
            hf.train()
            compile_model(ours)  # the blocks, in place: what `gptx train --compile` does
            for _ in range(3):  # compilation happens here, untimed
                step_ours()
            step_hf()
            t_ours, t_hf = [], []
            for _ in range(args.repeats):
                t_ours.append(timed(step_ours, args.device))
                t_hf.append(timed(step_hf, args.device))
            tps_ours, tps_hf = tokens / statistics.median(t_ours), tokens / statistics.median(t_hf)
            rows.append(
                (family, "train step, gptx compiled vs HF eager", tps_ours, tps_hf, tps_ours / tps_hf)
            )
    print(
        f"device={args.device} dtype={args.dtype} batch={args.batch} seq={args.seq} hidden={args.hidden} "
        f"layers={args.layers} heads={args.heads} vocab={args.vocab} threads={torch.get_num_threads()} "
        f"(median of {args.repeats})"
    )
    print("| model | mode | gptx tokens/s | HF tokens/s | gptx / HF |\n|---|---|---:|---:|---:|")
    for family, mode, a, b, r in rows:
        print(f"| {family} | {mode} | {a:,.0f} | {b:,.0f} | {r:.2f}x |")


if __name__ == "__main__":
    main()
