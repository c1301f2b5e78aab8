"""Eval tokens/s: `gptx eval`'s code paths vs transformers, on the same model and the same batches.

One random Hugging Face model (GPT-J or GPT-NeoX) is saved to a temporary directory and loaded by gptx
through `gptx_cli.load_model`, exactly as `gptx eval --checkpoint-path HF_DIR` does. Two workloads:

- loss eval: gptx `loss_metrics` (lm_loss: loss, perplexity, accuracy) vs transformers forward +
  masked cross-entropy + argmax accuracy, over the same batches;
- task scoring: gptx `LoglikelihoodScorer` with the gptx model vs the same scorer with transformers
  logits (so the difference is the model, not the bookkeeping), over the same multiple-choice requests.

Runs alternate (gptx, HF, gptx, HF, ...) so machine noise hits both alike; the loss difference between
the two is printed as a correctness check.

Then, against lm-evaluation-harness itself (`--harness`, default on; needs lm-eval and the GPT-2
tokenizer under $GPTX_SHARED), on a second model of the GPT-2 vocabulary saved with its tokenizer:

- harness scoring: requests/s of gptx's lm-eval model (`gptx lm-eval`) vs the harness's `hf` model
  (HFLM) on the same loglikelihood requests (real text: the Python reference topics, contexts split
  at a word) and the same rolling documents, same batch size;
- generation: greedy generate_until requests/s with left-padded batches (BatchGenerator, --gen-batch)
  vs one prompt at a time (batch 1), and HFLM.generate_until batched, on the same prompts.

    .venv/bin/python benchmarks/bench_eval.py                                   # small CPU sizes
    .venv/bin/python benchmarks/bench_eval.py --family gptj --hidden 256 --layers 4 --seq 256 --repeats 5
    .venv/bin/python benchmarks/bench_eval.py --device cuda --dtype bfloat16 --hidden 1024 --seq 1024
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch


def build_hf(family: str, args: argparse.Namespace):
    from bench_model import build_hf as build  # the same small config as the model benchmark

    return build(family, args).eval()


def hf_loss_metrics(model, batches, device) -> dict[str, float]:
    """The reference: transformers logits, ModelZoo's metrics computed by hand."""
    losses, ce_total, tokens, correct = [], 0.0, 0, 0
    with torch.inference_mode():
        for b in batches:
            inputs, labels, mask = (
                b["input_ids"].to(device),
                b["labels"].to(device),
                b["attention_mask"].to(device),
            )
            logits = model(inputs).logits.float()
            ce = torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="none")
            ce = (ce * mask.flatten()).sum()
            losses.append(ce.item() / mask.sum().item())
            ce_total += ce.item()
            tokens += int(mask.sum())
            correct += int(((logits.argmax(-1) == labels) & mask.bool()).sum())
    return {"loss": sum(losses) / len(losses), "accuracy": correct / tokens}


def timed(fn, sync) -> float:
    sync()
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--family", choices=["gpt-neox", "gptj"], default="gpt-neox")
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--steps", type=int, default=4, help="eval batches per run")
    p.add_argument("--choices", type=int, default=32, help="multiple-choice requests per task run")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--no-harness", dest="harness", action="store_false", help="skip the lm-eval comparison")
    p.add_argument("--requests", type=int, default=64, help="loglikelihood requests (harness scoring)")
    p.add_argument("--prompts", type=int, default=32, help="generation prompts")
    p.add_argument("--gen-tokens", type=int, default=32, help="tokens generated per prompt")
    p.add_argument("--gen-batch", type=int, default=16)
    args = p.parse_args()

    from gptx_cli import load_model
    from gptx_cli.eval.evaluate import loss_metrics
    from gptx_cli.eval.tasks import LoglikelihoodScorer

    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    hf = build_hf(args.family, args)
    with tempfile.TemporaryDirectory() as tmp:
        hf.save_pretrained(Path(tmp) / "hf")
        ours = load_model(str(Path(tmp) / "hf"), device=str(device), dtype=dtype)
    hf = hf.to(device, dtype)

    g = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(args.steps):
        ids = torch.randint(0, args.vocab, (args.batch, args.seq + 1), generator=g)
        mask = (torch.rand(args.batch, args.seq, generator=g) > 0.1).long()
        batches.append({"input_ids": ids[:, :-1], "labels": ids[:, 1:], "attention_mask": mask})
    eval_tokens = args.steps * args.batch * args.seq
    requests = []
    for _ in range(args.choices):
        n_ctx = int(torch.randint(args.seq // 4, args.seq // 2, (1,), generator=g))
        n_cont = int(torch.randint(1, args.seq // 4, (1,), generator=g))
        toks: list[int] = torch.randint(0, args.vocab, (n_ctx + n_cont,), generator=g).tolist()
        requests.append((toks[:n_ctx], toks[n_ctx:]))
    task_tokens = sum(len(c) + len(x) - 1 for c, x in requests)

    def hf_logits(x):
        return hf(x).logits

    runs = {
        "loss eval": (
            lambda: loss_metrics(ours, batches, device=device),
            lambda: hf_loss_metrics(hf, batches, device),
            eval_tokens,
        ),
        "task scoring": (
            lambda: LoglikelihoodScorer(ours, args.seq, args.batch, device).loglikelihood_tokens(requests),
            lambda: LoglikelihoodScorer(hf_logits, args.seq, args.batch, device).loglikelihood_tokens(
                requests
            ),
            task_tokens,
        ),
    }
    ours_metrics = loss_metrics(ours, batches, device=device)
    ref_metrics = hf_loss_metrics(hf, batches, device)
    print(
        f"{args.family} hidden={args.hidden} layers={args.layers} vocab={args.vocab} seq={args.seq} "
        f"batch={args.batch} steps={args.steps} device={device} dtype={args.dtype} threads={torch.get_num_threads()}"
    )
    print(
        f"loss gptx {ours_metrics.loss:.6f} vs transformers {ref_metrics['loss']:.6f} "
        f"(|diff| {abs(ours_metrics.loss - ref_metrics['loss']):.2e}); accuracy {ours_metrics.accuracy:.4f} "
        f"vs {ref_metrics['accuracy']:.4f}"
    )
    print(f"{'workload':<14} {'gptx tok/s':>12} {'HF tok/s':>12} {'gptx/HF':>8}")
    for name, (ours_fn, hf_fn, tokens) in runs.items():
        ours_fn(), hf_fn()  # warm-up
        t_ours, t_hf = [], []
        for _ in range(args.repeats):
            t_ours.append(timed(ours_fn, sync))
            t_hf.append(timed(hf_fn, sync))
        a, b = tokens / statistics.median(t_ours), tokens / statistics.median(t_hf)
        print(f"{name:<14} {a:>12.0f} {b:>12.0f} {a / b:>8.2f}")
    if args.harness:
        harness_section(args, device, sync)


def _instances(kind, args_list):
    from lm_eval.api.instance import Instance

    return [Instance(request_type=kind, doc={}, arguments=a, idx=i) for i, a in enumerate(args_list)]


def harness_section(args: argparse.Namespace, device: torch.device, sync) -> None:
    """gptx's lm-eval model vs the harness's HFLM on the same model, requests and batch size."""
    import copy
    import os
    import re
    from pydoc_data.topics import topics

    from lm_eval.models.huggingface import HFLM
    from transformers import PreTrainedTokenizerFast

    from gptx_cli.data.tokenizer import load_tokenizer
    from gptx_cli.eval.lm_eval_adapter import register

    shared = Path(os.environ.get("GPTX_SHARED", Path(__file__).resolve().parents[2] / "shared"))
    tok = load_tokenizer(shared / "assets" / "tokenizers" / "gpt2")
    hargs = copy.copy(args)
    hargs.vocab = 50257
    hf = build_hf(args.family, hargs)
    text = " ".join(" ".join(topics[k].split()) for k in sorted(topics))
    words = [w for w in re.split(r" ", text) if w]
    g = torch.Generator().manual_seed(1)
    lls, prompts = [], []
    for _ in range(args.requests):
        start = int(torch.randint(0, len(words) - 200, (1,), generator=g))
        n = int(torch.randint(8, args.seq // 2, (1,), generator=g))
        lls.append((" ".join(words[start : start + n]), " " + " ".join(words[start + n : start + n + 3])))
    for _ in range(args.prompts):
        start = int(torch.randint(0, len(words) - 200, (1,), generator=g))
        n = int(torch.randint(4, args.seq // 4, (1,), generator=g))
        prompts.append(" ".join(words[start : start + n]))
    docs = [(" ".join(words[i * 300 : i * 300 + 250]),) for i in range(8)]
    gen_kwargs = {"until": ["\n\n"], "max_gen_toks": args.gen_tokens, "do_sample": False}
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp) / "hf"
        hf.save_pretrained(d)
        eot = "<|endoftext|>"
        PreTrainedTokenizerFast(tokenizer_object=tok.hf, eos_token=eot, bos_token=eot).save_pretrained(d)
        dtype = args.dtype
        ref = HFLM(
            pretrained=str(d), batch_size=args.batch, device=str(device), max_length=args.seq, dtype=dtype
        )
        ours = register()(
            checkpoint=str(d), device=str(device), batch_size=args.batch, dtype=dtype, max_length=args.seq
        )
        ours_gen = register()(
            checkpoint=str(d), device=str(device), batch_size=args.gen_batch, dtype=dtype, max_length=args.seq
        )
        ours_one = register()(
            checkpoint=str(d), device=str(device), batch_size=1, dtype=dtype, max_length=args.seq
        )
        ref_gen = HFLM(
            pretrained=str(d), batch_size=args.gen_batch, device=str(device), max_length=args.seq, dtype=dtype
        )
    ll_req = _instances("loglikelihood", lls)
    roll_req = _instances("loglikelihood_rolling", docs)
    gen_req = _instances("generate_until", [(p, gen_kwargs) for p in prompts])
    a = [x for x, _ in ours.loglikelihood(ll_req)]
    b = [x for x, _ in ref.loglikelihood(ll_req, disable_tqdm=True)]
    worst = max(abs(x - y) / max(abs(y), 1e-9) for x, y in zip(a, b, strict=True))
    a = ours.loglikelihood_rolling(roll_req)
    b = ref.loglikelihood_rolling(roll_req, disable_tqdm=True)
    worst_roll = max(abs(x - y) / max(abs(y), 1e-9) for x, y in zip(a, b, strict=True))
    same_text = ours_gen.generate_until(gen_req) == ours_one.generate_until(gen_req)
    print(
        f"\nvs lm-eval HFLM: {args.requests} loglikelihood requests (max rel diff {worst:.1e}), {len(docs)} rolling "
        f"documents (max rel diff {worst_roll:.1e}), {args.prompts} prompts x {args.gen_tokens} tokens "
        f"(batched text == one-at-a-time: {same_text})"
    )
    cases = {
        "loglikelihood": (
            lambda: ours.loglikelihood(ll_req),
            lambda: ref.loglikelihood(ll_req, disable_tqdm=True),
            len(ll_req),
        ),
        "rolling": (
            lambda: ours.loglikelihood_rolling(roll_req),
            lambda: ref.loglikelihood_rolling(roll_req, disable_tqdm=True),
            len(roll_req),
        ),
        "generate (batched vs one-at-a-time)": (
            lambda: ours_gen.generate_until(gen_req),
            lambda: ours_one.generate_until(gen_req),
            len(gen_req),
        ),
        "generate (gptx vs HFLM, batched)": (
            lambda: ours_gen.generate_until(gen_req),
            lambda: ref_gen.generate_until(gen_req, disable_tqdm=True),
            len(gen_req),
        ),
    }
    print(f"{'workload':<38} {'gptx req/s':>11} {'ref req/s':>10} {'ratio':>7}")
    for name, (ours_fn, ref_fn, n) in cases.items():
        ours_fn(), ref_fn()  # warm-up, as for the workloads above (first-call allocations on both sides)
        t_ours, t_ref = [], []
        for _ in range(args.repeats):
            t_ours.append(timed(ours_fn, sync))
            t_ref.append(timed(ref_fn, sync))
        x, y = n / statistics.median(t_ours), n / statistics.median(t_ref)
        print(f"{name:<38} {x:>11.1f} {y:>10.1f} {x / y:>7.2f}")


if __name__ == "__main__":
    main()
