"""A LoRA training step in gptx beside Hugging Face peft + torch, on the same model, weights and batches.

Each mode runs in a fresh subprocess. Both build gptx's tiny GPT-J at the requested size (seed 0); the
peft mode converts it to transformers' GPTJForCausalLM (`gptx_cli.model.hf.to_hf`, SDPA attention)
and wraps it with `peft.LoraConfig` on q_proj, k_proj, v_proj, out_proj, fc_in and fc_out; gptx
applies ModelZoo's Lora callback with `target_modules: [GPTJDecoderLayer]`, the same projections (its
fused qkv holds the three q/k/v adapters). Both start from gptx's adapters (A seeded Kaiming-uniform, B
zero: peft's q/k/v A are the three blocks of gptx's stacked qkv A), r, alpha and dropout 0 equal.

Step: forward, masked CE averaged over the mask tokens (a half-prompt loss mask), backward, AdamW step
(lr 1e-3, betas 0.9/0.95, eps 1e-6, weight decay 0 on both sides), zero_grad. gptx runs its real train path (`lm_loss`, ModelZoo AdamW on
`optimizer_param_groups`); peft runs `torch.optim.AdamW` on the adapters and `F.cross_entropy` on the
model's logits, as a peft user would. ModelZoo AdamW adds eps to the uncorrected sqrt(v), so the two
losses differ slightly (the last column), while the work is the same.

Step time: median over the steps after `--warmup`. Memory: the process's peak RSS during the steps
(VmHWM, reset with /proc/self/clear_refs once the model is built) minus its RSS after the imports, so
it counts the model, optimizer state, activations and gradients, and not peft's conversion copies.

    .venv/bin/python benchmarks/bench_lora_peft.py                  # 6 layers, hidden 512, r 8, 2 threads
    .venv/bin/python benchmarks/bench_lora_peft.py --profile gptx   # torch.profiler table of one step
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HF_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj", "fc_in", "fc_out"]


def _status_mib(key: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak() -> bool:
    """Free what the setup dropped and reset VmHWM to the current RSS (Linux 4.0+)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _gptx_model(args: argparse.Namespace):
    from gptx_cli.api import build_model
    from gptx_cli.config import load_run_spec
    from gptx_cli.config.lora import LoraParams
    from gptx_cli.model.lora import apply_lora

    sets = [
        f"model.hidden_size={args.hidden}", f"model.num_hidden_layers={args.layers}",
        f"model.num_heads={args.hidden // 64}", f"model.filter_size={4 * args.hidden}",
        f"model.max_position_embeddings={args.seq}", "model.rotary_dim=16",
    ]  # fmt: skip
    spec = load_run_spec(REPO / "configs" / "tiny_gptj.yaml", overrides=sets)
    model = build_model(spec.model, seed=0)
    group = LoraParams(r=args.r, alpha=args.alpha, target_modules=["GPTJDecoderLayer"])
    apply_lora(model, [group], seed=0)
    return spec, model.train()


def _batches(args: argparse.Namespace, vocab: int):
    import torch

    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(args.warmup + args.steps):
        ids = torch.randint(0, vocab, (args.batch, args.seq + 1), generator=g)
        mask = torch.zeros(args.batch, args.seq, dtype=torch.int64)
        mask[:, args.seq // 2 :] = 1
        out.append((ids[:, :-1].contiguous(), ids[:, 1:].contiguous(), mask))
    return out


def _peft_model(args: argparse.Namespace, spec, gptx_model):
    """gptx's model (base and initial adapters) as transformers GPT-J wrapped by peft."""
    import torch
    import transformers
    from peft import LoraConfig, get_peft_model

    from gptx_cli.model.hf import hf_config_from_model_config, to_hf
    from gptx_cli.model.lora import is_adapter

    cfg = spec.model
    base = {k: v for k, v in gptx_model.state_dict().items() if not is_adapter(k)}
    hf_sd = {k: v.clone() for k, v in to_hf(cfg, base.keys(), base.__getitem__, "gptj")}
    config = transformers.GPTJConfig(**hf_config_from_model_config(cfg, "gptj"))
    config._attn_implementation = "sdpa"
    hf = transformers.GPTJForCausalLM(config)
    missing, unexpected = hf.load_state_dict(hf_sd, strict=False)
    assert not unexpected and all("masked_bias" in k or k.endswith(".attn.bias") for k in missing), missing
    lora = LoraConfig(
        r=args.r, lora_alpha=args.alpha, lora_dropout=0.0, target_modules=HF_TARGETS, bias="none"
    )
    model = get_peft_model(hf, lora)
    with torch.no_grad():
        for i in range(cfg.num_hidden_layers):
            attn = model.base_model.model.transformer.h[i].attn
            mlp = model.base_model.model.transformer.h[i].mlp
            gl = gptx_model.layers[i]
            for j, proj in enumerate((attn.q_proj, attn.k_proj, attn.v_proj)):
                proj.lora_A["default"].weight.copy_(gl.attn.qkv.lora_A[j * args.r : (j + 1) * args.r])
                proj.lora_B["default"].weight.zero_()
            for ours, theirs in (
                (gl.attn.out, attn.out_proj),
                (gl.mlp.fc_in, mlp.fc_in),
                (gl.mlp.fc_out, mlp.fc_out),
            ):
                theirs.lora_A["default"].weight.copy_(ours.lora_A)
                theirs.lora_B["default"].weight.copy_(ours.lora_B)
    return model.train()


def run_one(args: argparse.Namespace) -> dict:
    import torch
    import torch.nn.functional as F

    from gptx_cli.model.init import optimizer_param_groups
    from gptx_cli.model.loss import lm_loss
    from gptx_cli.train.optim import build_optimizer

    torch.set_num_threads(args.threads)
    base_rss = _status_mib("VmRSS")
    spec, model = _gptx_model(args)
    vocab = spec.model.vocab_size
    if args.mode == "gptx":
        opt = build_optimizer(spec.optimizer, optimizer_param_groups(model, spec.model))
        for group in opt.param_groups:  # the adapters are all in the no-decay group already
            group.update(lr=1e-3, betas=(0.9, 0.95), eps=1e-6, weight_decay=0.0)

        def loss_of(ids, labels, mask):
            return lm_loss(model, ids, labels, mask).loss
    else:
        gptx_model = model
        model = _peft_model(args, spec, gptx_model)
        del gptx_model
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=1e-3, betas=(0.9, 0.95), eps=1e-6, weight_decay=0.0)

        def loss_of(ids, labels, mask):
            logits = model(input_ids=ids).logits
            targets = labels.masked_fill(mask == 0, -100)
            return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=-100)

    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    batches = _batches(args, vocab)
    setup_rss = _status_mib("VmRSS")
    reset = _reset_peak()

    def step(ids, labels, mask) -> float:
        loss = loss_of(ids, labels, mask)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()

    times, losses = [], []
    for i, b in enumerate(batches):
        t0 = time.perf_counter()
        losses.append(step(*b))
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
    peak = _status_mib("VmHWM")
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            step(*batches[-1])
        print(prof.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total", row_limit=40),
              file=sys.stderr)  # fmt: skip
    return {
        "mode": args.mode,
        "trainable": trainable,
        "step_s": statistics.median(times),
        "steps_s": times,
        "model_mib": setup_rss - base_rss,
        "peak_mib": peak - base_rss if reset else float("nan"),
        "losses": losses,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--steps", type=int, default=5, help="timed steps (after --warmup)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--r", type=int, default=8)
    p.add_argument("--alpha", type=float, default=16)
    p.add_argument("--modes", default="gptx,peft")
    p.add_argument("--profile", choices=("gptx", "peft"), help="print a torch.profiler table of that mode")
    p.add_argument("--mode", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.mode:
        args.profile = args.profile == args.mode
        print(json.dumps(run_one(args)))
        return
    rows = []
    for mode in args.modes.split(","):
        cmd = [sys.executable, __file__, *sys.argv[1:], "--mode", mode]
        res = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True, cwd=REPO)
        rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
    print(
        f"GPT-J hidden={args.hidden} layers={args.layers} seq={args.seq} batch={args.batch} vocab=50257 fp32, "
        f"LoRA r={args.r} alpha={args.alpha:g} on q,k,v,out_proj,fc_in,fc_out; threads={args.threads}; "
        f"median of {args.steps} steps after {args.warmup} warm-up"
    )
    print(
        "| stack | trainable params | step s (median) | step s (min-max) | model MiB | peak MiB | loss step 1 | final loss |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['mode']} | {r['trainable']:,} | {r['step_s']:.3f} | {min(r['steps_s']):.3f}-{max(r['steps_s']):.3f} | "
            f"{r['model_mib']:,.0f} | {r['peak_mib']:,.0f} | {r['losses'][0]:.6f} | {r['losses'][-1]:.6f} |"
        )
    if len(rows) == 2:
        a, b = rows
        print(
            f"{a['mode']} / {b['mode']} speed: {b['step_s'] / a['step_s']:.2f}x; "
            f"peak memory: {a['peak_mib'] / b['peak_mib']:.2f}x; "
            f"max |loss difference| over the steps: {max(abs(x - y) for x, y in zip(a['losses'], b['losses'], strict=True)):.2e}"
        )


if __name__ == "__main__":
    main()
