"""GPU speed benchmark: gptx against Hugging Face transformers on GPT-J-6B and a GPT-NeoX-20B slice.

One short run (a few minutes on one H100/H200) that prints a table and writes `gpu_bench.json` and
`gpu_bench.txt` into `$OUT` (or `--out`, default `./gpu-bench-out`):

- gptx training steps of GPT-J-6B at batch 4 x 2048: bf16 autocast, fp32 master weights, gradient
  clipping at 1.0 and gptx's own optimizer step (ModelZoo AdamW on torch's fused kernel, fp32 states,
  the clip multiplier folded in: what `gptx train` runs); eager and `torch.compile`d;
- the Hugging Face `GPTJForCausalLM` baseline in the same run, with gradient checkpointing (it runs out
  of memory without), same batch, bf16 autocast, `clip_grad_norm_` + `torch.optim.AdamW(fused=True)`;
- forward-only eval (forward + loss, no grad) of both at batch 8 x 2048 with bf16 weights;
- a GPT-NeoX-20B-width model (hidden 6144, 64 heads, untied LayerNorms) with a few layers;
- the gptx model with Hugging Face's optimizer step (torch AdamW), last: the model alone compared.

Every case builds a fresh model, runs warm-up steps (compilation happens there), then timed steps
with `torch.cuda.synchronize()` around each; an out-of-memory error or any other failure is recorded
in that case's row and the run goes on. When the card cannot hold the full model with fp32 weights,
gradients and AdamW states plus activations (90 GiB of state alone for 6.05B parameters), a short memory
probe (2 and 4 layers) measures bytes per layer and the training rows run the largest layer count
that fits; the table says so. MFU uses `gptx_cli.model.counts.flops_per_token` (6N + 12·L·H·Q·T per
trained token; a third of it for forward-only eval) against the card's dense bf16 peak.

`--tiny` runs the same code at toy size on the CPU in seconds (compiled rows use the `aot_eager`
backend there, since inductor's C++ build takes half a minute on a small CPU).

Only torch (and, optionally, transformers) is needed: run it from a copy of the repository with the
repository root on PYTHONPATH (benchmarks/gpu/run.sh does that).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import datetime
import gc
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # so `python benchmarks/gpu/bench_gpu.py` works without installing gptx
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from gptx_cli.config.spec import ModelConfig  # noqa: E402
from gptx_cli.fsutil import write_text  # noqa: E402

# Dense (no sparsity) bf16 tensor-core peak, TFLOP/s, from NVIDIA's datasheets. Matched as substrings
# of torch.cuda.get_device_name() in this order, so the more specific names come first.
BF16_PEAK_TFLOPS: tuple[tuple[str, float], ...] = (
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H200 NVL", 835.0),
    ("GH200", 989.0),
    ("H200", 989.0),
    ("H100", 989.0),  # SXM ("NVIDIA H100 80GB HBM3")
    ("A100", 312.0),
)

# The published Hugging Face config.json files; gptx's ModelConfig is derived from them with
# gptx_cli.model.hf.model_config_from_hf, so both implementations compute the same function.
GPTJ_6B_CONFIG_JSON: dict[str, Any] = {  # EleutherAI/gpt-j-6b
    "architectures": ["GPTJForCausalLM"],
    "model_type": "gptj",
    "activation_function": "gelu_new",
    "vocab_size": 50400,
    "n_embd": 4096,
    "n_head": 16,
    "n_layer": 28,
    "n_inner": None,
    "n_positions": 2048,
    "rotary_dim": 64,
    "layer_norm_epsilon": 1e-05,
    "attn_pdrop": 0.0,
    "embd_pdrop": 0.0,
    "resid_pdrop": 0.0,
    "initializer_range": 0.02,
    "tie_word_embeddings": False,
    "bos_token_id": 50256,
    "eos_token_id": 50256,
}
NEOX_20B_CONFIG_JSON: dict[str, Any] = {  # EleutherAI/gpt-neox-20b
    "architectures": ["GPTNeoXForCausalLM"],
    "model_type": "gpt_neox",
    "hidden_act": "gelu_fast",
    "vocab_size": 50432,
    "hidden_size": 6144,
    "num_attention_heads": 64,
    "num_hidden_layers": 44,
    "intermediate_size": 24576,
    "max_position_embeddings": 2048,
    "rotary_pct": 0.25,
    "rotary_emb_base": 10000,
    "layer_norm_eps": 1e-05,
    "use_parallel_residual": True,
    "tie_word_embeddings": False,
    "initializer_range": 0.02,
    "bos_token_id": 0,
    "eos_token_id": 0,
}
# --tiny: the same architectures at toy size (head_dim 16, rotary 4) so a CPU runs every case in seconds.
TINY_OVERRIDES: dict[str, dict[str, Any]] = {
    "gptj": {
        "vocab_size": 512,
        "n_embd": 64,
        "n_head": 4,
        "n_layer": 2,
        "rotary_dim": 4,
        "n_positions": 64,
        "bos_token_id": 0,
        "eos_token_id": 0,
    },
    "gpt-neox": {
        "vocab_size": 512,
        "hidden_size": 128,
        "num_attention_heads": 8,
        "num_hidden_layers": 2,
        "intermediate_size": 512,
        "max_position_embeddings": 64,
    },
}

TINY_CHUNK_LOGITS = 1 << 14  # train 2 x 64 x 512 logits: 4 chunks of 16 positions; eval 4 x 64: 8 of 8

GIB = 1024.0**3


@dataclasses.dataclass(frozen=True)
class Case:
    key: str  # stable identifier, used by --cases and in the JSON
    family: str  # "gptj" | "gpt-neox"
    impl: str  # "gptx" | "hf"
    mode: str  # "train" | "eval"
    batch: int
    seq: int
    compiled: bool = False
    checkpointing: bool = False  # activation (gradient) checkpointing
    # "gptx": what `gptx train` runs (ModelZoo AdamW on torch's fused kernel, the clip multiplier folded
    # into it); "torch-fused": torch.optim.AdamW(fused=True) after torch's clip_grad_norm_.
    optimizer: str = "gptx"
    # Only when the memory fit cut the GPT-J training rows short: the same case at all layers (it may
    # run out of memory; activation checkpointing or compilation may make it fit).
    full_depth: bool = False


@dataclasses.dataclass
class Settings:
    device: torch.device
    tiny: bool
    warmup: int
    steps: int
    layers: int | None  # forced layer count for the GPT-J training rows (None: fit to memory)
    neox_layers: int
    memory_fraction: float
    time_budget_s: float
    peak_tflops: float | None
    compile_backend: str
    # lm_loss's chunk size (logits per chunk); --tiny lowers it so toy batches run several chunks of
    # the fused LM-head path, as full-size batches do.
    chunk_logits: int | None = None


def model_label(family: str, tiny: bool) -> str:
    base = "GPT-J-6B" if family == "gptj" else "NeoX-20B-width"
    return f"tiny {base}" if tiny else base


def layer_key(family: str) -> str:
    return "n_layer" if family == "gptj" else "num_hidden_layers"


def hf_config_json(family: str, layers: int | None, tiny: bool) -> dict[str, Any]:
    """The config.json of the case's model (at toy size with --tiny), with `layers` layers if given."""
    out = dict(GPTJ_6B_CONFIG_JSON if family == "gptj" else NEOX_20B_CONFIG_JSON)
    if tiny:
        out.update(TINY_OVERRIDES[family])
    if layers is not None:
        out[layer_key(family)] = layers
    return out


def full_layers(family: str, tiny: bool) -> int:
    return int(hf_config_json(family, None, tiny)[layer_key(family)])


def gptx_model_config_from_json(config_json: dict[str, Any]) -> ModelConfig:
    from gptx_cli.model.hf import model_config_from_hf

    return model_config_from_hf(config_json)


def gptx_model_config(family: str, layers: int, tiny: bool) -> ModelConfig:
    return gptx_model_config_from_json(hf_config_json(family, layers, tiny))


# -- environment ---------------------------------------------------------------------------------


def bf16_peak_tflops(device_name: str) -> float | None:
    for needle, tflops in BF16_PEAK_TFLOPS:
        if needle in device_name:
            return tflops
    return None


def inspect_environment(settings: Settings) -> dict[str, Any]:
    env: dict[str, Any] = {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "device": str(settings.device),
        "device_name": platform.processor() or "cpu",
        "device_memory_gib": None,
        "bf16_peak_tflops": settings.peak_tflops,
        "peak_source": "--peak-tflops" if settings.peak_tflops else None,
        "pytorch_cuda_alloc_conf": os.environ.get("PYTORCH_CUDA_ALLOC_CONF"),
        "transformers": None,
        "gptx_commit": None,
    }
    if settings.device.type == "cuda":
        props = torch.cuda.get_device_properties(settings.device)
        env["device_name"] = props.name
        env["device_memory_gib"] = round(props.total_memory / GIB, 1)
        env["compute_capability"] = f"{props.major}.{props.minor}"
        env["cudnn"] = torch.backends.cudnn.version()
        env["flash_sdp_enabled"] = torch.backends.cuda.flash_sdp_enabled()
        env["tf32_matmul"] = torch.backends.cuda.matmul.allow_tf32
        if settings.peak_tflops is None:
            env["bf16_peak_tflops"] = bf16_peak_tflops(props.name)
            env["peak_source"] = (
                "datasheet table by device name" if env["bf16_peak_tflops"] else "unknown card"
            )
    # Version without importing (transformers takes seconds to import; only the HF rows need it).
    if importlib.util.find_spec("transformers") is not None:
        try:
            env["transformers"] = importlib.metadata.version("transformers")
        except importlib.metadata.PackageNotFoundError:  # importable without package metadata
            env["transformers"] = "present (version unknown)"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        rev = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        if rev.returncode == 0:
            env["gptx_commit"] = rev.stdout.strip()
    # A copied working tree can carry a stale .git (seen on the lent GPU machines): the caller may say.
    env["gptx_commit"] = os.environ.get("GPTX_COMMIT") or env["gptx_commit"]
    return env


def check_flash_attention(device: torch.device) -> str:
    """Whether gptx's attention runs on the flash SDPA kernel (forward and backward) at GPT-J's head_dim.

    Run with every other SDPA backend disabled: an error here means gptx would silently fall back to
    the slower memory-efficient or math kernel.
    """
    if device.type != "cuda":
        return f"not checked on {device.type}"
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:
        return f"not checked (torch {torch.__version__} has no torch.nn.attention)"
    from gptx_cli.model.loss import lm_loss

    config_json = {**GPTJ_6B_CONFIG_JSON, "n_layer": 1, "n_embd": 512, "n_head": 2, "vocab_size": 512}
    cfg = gptx_model_config_from_json(config_json)  # head_dim 256, rotary 64, as GPT-J-6B
    model = build_gptx(cfg, device)
    batch = make_batch(cfg.vocab_size, 2, 256, device)
    try:
        with sdpa_kernel([SDPBackend.FLASH_ATTENTION]), torch.autocast(device.type, dtype=torch.bfloat16):
            loss = lm_loss(model, batch["input_ids"], batch["labels"], batch["loss_mask"]).loss
        loss.backward()
        synchronize(device)
        return f"ok: flash kernel, head_dim {cfg.head_dim}, forward and backward"
    except Exception as err:  # noqa: BLE001 - the answer is the error
        return f"not eligible: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"[:300]


# -- building models -------------------------------------------------------------------------------


def build_gptx(cfg: ModelConfig, device: torch.device, seed: int = 0) -> torch.nn.Module:
    """A gptx Transformer created directly on `device`, weights drawn there.

    Matrices get N(0, initializer_range), LayerNorms 1 and 0, biases 0: the values do not change the
    speed, and gptx's seeded ModelZoo initialisation (`initialize_parameters`) draws every weight on
    the CPU, which for 6B parameters takes longer than this whole benchmark.
    """
    from gptx_cli.model.transformer import Transformer

    with torch.device(device):
        model = Transformer(cfg)
    gen = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            for name, p in module.named_parameters(recurse=False):
                if isinstance(module, torch.nn.LayerNorm):
                    p.fill_(1.0 if name == "weight" else 0.0)
                elif p.ndim >= 2:
                    p.normal_(0.0, cfg.initializer_range, generator=gen)
                else:
                    p.zero_()
    return model


def build_hf(config_json: dict[str, Any], device: torch.device, seed: int = 0) -> tuple[torch.nn.Module, str]:
    """The Hugging Face model for a config.json, created on `device`; returns (model, attention implementation)."""
    import transformers

    config_cls = (
        transformers.GPTJConfig if config_json["model_type"] == "gptj" else transformers.GPTNeoXConfig
    )
    hf_cfg = config_cls.from_dict({k: v for k, v in config_json.items() if k != "architectures"})
    hf_cfg.use_cache = False
    torch.manual_seed(seed)
    with torch.device(device):
        try:
            # SDPA where this transformers version supports it for the model (GPT-J has only eager).
            model = transformers.AutoModelForCausalLM.from_config(
                copy.deepcopy(hf_cfg), attn_implementation="sdpa"
            )
        except (ValueError, ImportError, TypeError):
            # A fresh copy: the failed attempt may have written "sdpa" into the config it was given.
            model = transformers.AutoModelForCausalLM.from_config(
                copy.deepcopy(hf_cfg), attn_implementation="eager"
            )
    model = model.to(device=device, dtype=torch.float32)
    attn = getattr(model.config, "_attn_implementation", None) or "default"
    return model, str(attn)


# -- one case --------------------------------------------------------------------------------------


def enable_hf_checkpointing(model: Any) -> None:
    """Per-layer activation checkpointing in whatever spelling this transformers version has."""
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        return
    try:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    except TypeError:  # transformers < 4.35
        model.gradient_checkpointing_enable()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def is_out_of_memory(err: BaseException) -> bool:
    oom_types = tuple(
        t
        for t in (getattr(torch, "OutOfMemoryError", None), getattr(torch.cuda, "OutOfMemoryError", None))
        if t
    )
    return isinstance(err, oom_types) or "out of memory" in str(err).lower()


def torch_adamw(params: Any) -> torch.optim.Optimizer:
    # GPT-J-6B's ModelZoo hyperparameters where they matter for the kernel (eps, weight decay).
    return torch.optim.AdamW(params, lr=1e-5, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.1, fused=True)


def gptx_optimizer(model: torch.nn.Module, cfg: ModelConfig, which: str) -> torch.optim.Optimizer:
    from gptx_cli.model.init import optimizer_param_groups

    groups = optimizer_param_groups(model, cfg)
    if which == "gptx":
        from gptx_cli.config.spec import OptimizerSpec
        from gptx_cli.train.optim import build_optimizer

        optimizer = build_optimizer(
            OptimizerSpec(name="AdamW", params={"eps": 1e-6, "weight_decay": 0.1}), groups
        )
        for group in optimizer.param_groups:  # the trainer's schedule sets the LR; same as torch's row here
            group["lr"] = 1e-5
        return optimizer
    return torch_adamw(groups)


def gptx_train_step(
    model: torch.nn.Module,
    cfg: ModelConfig,
    optimizer: torch.optim.Optimizer,
    batch: dict[str, torch.Tensor],
    device: torch.device,
    settings: Settings,
) -> Callable[[], torch.Tensor]:
    """gptx's own train step (`train.step.Stepper`, what `gptx train` runs): bf16 autocast, lm_loss,
    backward, clipping at 1.0, the optimizer step with the clip multiplier folded in, no host sync."""
    from gptx_cli.config.spec import PrecisionSpec
    from gptx_cli.train.step import LossModule, Stepper

    module = LossModule(model, cfg.loss_scaling, cfg.loss_weight, chunk_logits=settings.chunk_logits)
    precision = PrecisionSpec(enabled=True, fp16_type="bfloat16", max_gradient_norm=1.0)
    stepper = Stepper(module, optimizer, device=device, precision=precision)
    inputs = {
        "input_ids": batch["input_ids"],
        "labels": batch["labels"],
        "attention_mask": batch["loss_mask"],
    }
    return lambda: stepper(inputs).loss


def make_batch(cfg_vocab: int, batch: int, seq: int, device: torch.device) -> dict[str, torch.Tensor]:
    gen = torch.Generator(device="cpu").manual_seed(1234)
    tokens = torch.randint(0, cfg_vocab, (batch, seq + 1), generator=gen)
    return {
        "input_ids": tokens[:, :-1].contiguous().to(device),
        "labels": tokens[:, 1:].contiguous().to(device),
        "loss_mask": torch.ones(batch, seq, dtype=torch.int64, device=device),
    }


def prepare_case(
    case: Case, layers: int, settings: Settings
) -> tuple[Callable[[], torch.Tensor], dict[str, Any]]:
    """Build the model, optimizer and batch for a case; returns (one step, facts for the row)."""
    device = settings.device
    bf16 = torch.bfloat16
    config_json = hf_config_json(case.family, layers, settings.tiny)
    cfg = gptx_model_config(case.family, layers, settings.tiny)
    batch = make_batch(cfg.vocab_size, case.batch, case.seq, device)
    facts: dict[str, Any] = {}

    def autocast() -> contextlib.AbstractContextManager[Any]:
        return torch.autocast(device_type=device.type, dtype=bf16)

    if case.impl == "gptx":
        from gptx_cli.model.loss import lm_loss

        chunking = {"chunk_logits": settings.chunk_logits} if settings.chunk_logits else {}
        model = build_gptx(cfg, device)
        if case.mode == "eval":
            model = model.to(bf16).eval()
        else:  # param groups (decay / no decay by name) come from the unwrapped model
            optimizer = gptx_optimizer(model, cfg, case.optimizer)
        if case.checkpointing:
            from gptx_cli.train.parallel import apply_activation_checkpointing

            apply_activation_checkpointing(model)
        if case.compiled:
            from gptx_cli.train.parallel import compile_model

            model = compile_model(model, backend=settings.compile_backend) or model

        def forward_loss() -> torch.Tensor:
            out = lm_loss(
                model,
                batch["input_ids"],
                batch["labels"],
                batch["loss_mask"],
                loss_scaling=cfg.loss_scaling,
                loss_weight=cfg.loss_weight,
                **chunking,
            )
            return out.loss
    else:
        model, facts["attn_implementation"] = build_hf(config_json, device)
        if case.mode == "eval":
            model = model.to(bf16).eval()
        else:
            model.train()
        if case.checkpointing:
            enable_hf_checkpointing(model)

        def forward_loss() -> torch.Tensor:
            # HF shifts labels itself: passing the inputs as labels is its standard LM loss.
            return model(input_ids=batch["input_ids"], labels=batch["input_ids"], use_cache=False).loss

        if case.mode == "train":
            optimizer = torch_adamw(model.parameters())

    params = [p for p in model.parameters() if p.requires_grad]
    facts["params"] = sum(p.numel() for p in params)

    if case.mode == "train":
        model.train()
        if case.impl == "gptx" and case.optimizer == "gptx":
            step = gptx_train_step(model, cfg, optimizer, batch, device, settings)
        else:  # Hugging Face's loop: torch's clip_grad_norm_ and torch AdamW(fused=True)

            def step() -> torch.Tensor:
                with autocast():
                    loss = forward_loss()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0, foreach=True)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                return loss.detach()

    else:

        def step() -> torch.Tensor:
            with torch.inference_mode():
                return forward_loss().float()

    return step, facts


def time_case(
    step: Callable[[], torch.Tensor], warmup: int, steps: int, device: torch.device
) -> dict[str, Any]:
    synchronize(device)
    start = time.perf_counter()
    for _ in range(warmup):
        step()
    synchronize(device)
    warmup_s = time.perf_counter() - start
    losses: list[torch.Tensor] = []
    step_s: list[float] = []
    for _ in range(steps):
        t0 = time.perf_counter()
        losses.append(step())
        synchronize(device)
        step_s.append(time.perf_counter() - t0)
    return {"warmup_s": warmup_s, "step_s": step_s, "losses": [float(x) for x in losses]}


def base_row(case: Case, layers: int, settings: Settings) -> dict[str, Any]:
    return {
        "case": case.key,
        "model": model_label(case.family, settings.tiny),
        "impl": case.impl,
        "mode": case.mode,
        "compile": case.compiled,
        "compile_backend": settings.compile_backend if case.compiled else None,
        "activation_checkpointing": case.checkpointing,
        "optimizer": None if case.mode == "eval" else case.optimizer,
        "weights": "fp32 + bf16 autocast" if case.mode == "train" else "bf16",
        "layers": layers,
        "layers_full": full_layers(case.family, settings.tiny),
        "batch": case.batch,
        "seq": case.seq,
        "status": "ok",
        "detail": "",
        "peak_mem_gib": None,
    }


def measure(case: Case, layers: int, settings: Settings) -> dict[str, Any]:
    step, facts = prepare_case(case, layers, settings)
    # Compiled cases get one more warm-up step in case the second call still recompiles.
    warmup = settings.warmup + 1 if case.compiled else settings.warmup
    return {**facts, **time_case(step, warmup, settings.steps, settings.device)}


def run_case(case: Case, layers: int, settings: Settings, peak_tflops: float | None) -> dict[str, Any]:
    """One row of the table; failures (OOM included) become the row's status instead of ending the run."""
    from gptx_cli.model.counts import count_parameters, flops_per_token

    device = settings.device
    cfg = gptx_model_config(case.family, layers, settings.tiny)
    row = base_row(case, layers, settings)
    row["params_counted"] = count_parameters(cfg)
    train_flops = flops_per_token(cfg, case.seq)
    row["flops_per_token"] = train_flops if case.mode == "train" else train_flops / 3.0
    free_memory(device)
    started = time.perf_counter()
    try:
        row.update(measure(case, layers, settings))
    except Exception as err:  # noqa: BLE001 - every failure is a result to report, not a crash
        row["status"] = "OOM" if is_out_of_memory(err) else "error"
        first_line = str(err).splitlines()[0] if str(err) else ""
        row["detail"] = f"{type(err).__name__}: {first_line}"[:300]
        if row["status"] == "error":
            row["traceback"] = traceback.format_exc(limit=8)
    # Leaving the except block dropped the traceback and with it measure()'s frame (model, optimizer).
    row["wall_s"] = round(time.perf_counter() - started, 2)
    row["peak_mem_gib"] = (
        round(torch.cuda.max_memory_allocated(device) / GIB, 2) if device.type == "cuda" else None
    )
    if case.compiled:
        torch._dynamo.reset()
    free_memory(device)
    if row["status"] == "ok":
        mean_step = sum(row["step_s"]) / len(row["step_s"])
        row["mean_step_s"] = mean_step
        row["tokens_per_s"] = case.batch * case.seq / mean_step
        row["tflops_per_s"] = row["tokens_per_s"] * row["flops_per_token"] / 1e12
        row["mfu"] = row["tflops_per_s"] / peak_tflops if peak_tflops else None
        if not all(math.isfinite(x) for x in row["losses"]):
            row["detail"] = "non-finite loss"
    return row


# -- memory fit ------------------------------------------------------------------------------------


def fit_training_layers(
    settings: Settings, peak_tflops: float | None, notes: list[str]
) -> tuple[int, list[dict[str, Any]]]:
    """The GPT-J layer count the training rows use: all 28 when they fit, else the largest that fits."""
    full = full_layers("gptj", settings.tiny)
    if settings.layers is not None:
        if settings.layers != full:
            notes.append(f"GPT-J training rows use {settings.layers} of {full} layers (--layers)")
        return settings.layers, []
    if settings.device.type != "cuda":
        return full, []
    total = torch.cuda.get_device_properties(settings.device).total_memory
    budget = settings.memory_fraction * total
    cfg_full = gptx_model_config("gptj", full, settings.tiny)
    from gptx_cli.model.counts import count_parameters

    state_bytes = 16 * count_parameters(cfg_full)  # fp32 weights + grads + AdamW exp_avg, exp_avg_sq
    if state_bytes < 0.5 * budget:
        return full, []  # half the card is left for activations (toy sizes, or a future card): no probe
    train_case = next(c for c in all_cases(settings.tiny) if c.key == "gptj-train-gptx")
    probe_settings = dataclasses.replace(settings, warmup=1, steps=1)
    probes = []
    peaks: dict[int, float] = {}
    for n in (2, 4):
        row = run_case(
            dataclasses.replace(train_case, key=f"memory-probe-{n}-layers"), n, probe_settings, peak_tflops
        )
        probes.append(row)
        if row["status"] != "ok":
            notes.append(
                f"memory probe at {n} layers failed ({row['detail']}); training rows use all {full} layers"
            )
            return full, probes
        peaks[n] = row["peak_mem_gib"] * GIB
    per_layer = (peaks[4] - peaks[2]) / 2
    fixed = peaks[2] - 2 * per_layer
    if per_layer <= 0:
        notes.append(f"memory probe found no growth per layer; training rows use all {full} layers")
        return full, probes
    fit = max(1, min(full, int((budget - fixed) // per_layer)))
    notes.append(
        f"memory probe: {per_layer / GIB:.2f} GiB per layer + {fixed / GIB:.2f} GiB fixed at batch "
        f"{train_case.batch} x {train_case.seq}; {settings.memory_fraction:.0%} of {total / GIB:.1f} GiB "
        f"holds {fit} layers"
    )
    if fit < full:
        notes.append(
            f"the probe predicts this card cannot train the full {full}-layer GPT-J-6B with fp32 weights, "
            f"grads and AdamW states ({state_bytes / GIB:.0f} GiB of state alone) plus activations: GPT-J "
            f"training rows (gptx and Hugging Face alike) use {fit} of {full} layers (--layers {full} "
            f"forces full depth); eval rows use all {full}"
        )
    return fit, probes


# -- the run ---------------------------------------------------------------------------------------


def all_cases(tiny: bool) -> list[Case]:
    train_b, eval_b, seq = (2, 4, 64) if tiny else (4, 8, 2048)
    gptx_train = Case("gptj-train-gptx", "gptj", "gptx", "train", train_b, seq)
    gptx_compiled = dataclasses.replace(gptx_train, key="gptj-train-gptx-compile", compiled=True)
    hf_ckpt = Case("gptj-train-hf-ckpt", "gptj", "hf", "train", train_b, seq, checkpointing=True)
    hf_ckpt = dataclasses.replace(hf_ckpt, optimizer="torch-fused")
    gptx_ckpt = dataclasses.replace(gptx_train, key="gptj-train-gptx-ckpt", checkpointing=True)
    neox = Case("neox-train-gptx", "gpt-neox", "gptx", "train", train_b, seq)
    return [
        gptx_train,
        gptx_compiled,
        hf_ckpt,
        Case("gptj-eval-gptx", "gptj", "gptx", "eval", eval_b, seq),
        Case("gptj-eval-hf", "gptj", "hf", "eval", eval_b, seq),
        Case("gptj-eval-gptx-compile", "gptj", "gptx", "eval", eval_b, seq, compiled=True),
        # Only when the memory fit cut the GPT-J training rows short: the same at all layers.
        *(
            dataclasses.replace(c, key=f"{c.key}-full", full_depth=True)
            for c in (gptx_compiled, gptx_ckpt, hf_ckpt)
        ),
        neox,
        dataclasses.replace(neox, key="neox-train-gptx-compile", compiled=True),
        dataclasses.replace(neox, key="neox-train-hf", impl="hf", optimizer="torch-fused"),
        dataclasses.replace(gptx_train, key="gptj-train-gptx-torchadamw", optimizer="torch-fused"),
    ]


def case_layers(case: Case, gptj_train_layers: int, settings: Settings) -> int:
    if case.family == "gpt-neox":
        return settings.neox_layers
    if case.full_depth:
        return full_layers("gptj", settings.tiny)
    return gptj_train_layers if case.mode == "train" else full_layers("gptj", settings.tiny)


def fastest(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    ok = [r for r in rows if r["status"] == "ok"]
    return max(ok, key=lambda r: r["tokens_per_s"]) if ok else None


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """gptx's fastest GPT-J rows against Hugging Face's at the same depth (the deepest where both ran),
    and the issue's targets (None: not measured)."""
    summary: dict[str, Any] = {}
    for mode in ("train", "eval"):
        gptj = [
            r for r in rows if r["model"].endswith("GPT-J-6B") and r["mode"] == mode and r["status"] == "ok"
        ]
        g = h = None
        for layers in sorted({r["layers"] for r in gptj}, reverse=True):
            at = [r for r in gptj if r["layers"] == layers]
            g = fastest([r for r in at if r["impl"] == "gptx"])
            h = fastest([r for r in at if r["impl"] == "hf"])
            if g and h:
                break
        summary[f"gptj_{mode}_layers"] = g["layers"] if g else None
        summary[f"gptj_{mode}_best_gptx"] = g["case"] if g else None
        summary[f"gptj_{mode}_gptx_tokens_per_s"] = g["tokens_per_s"] if g else None
        summary[f"gptj_{mode}_hf_tokens_per_s"] = h["tokens_per_s"] if h else None
        summary[f"gptj_{mode}_speedup_vs_hf"] = g["tokens_per_s"] / h["tokens_per_s"] if g and h else None
        summary[f"gptj_{mode}_gptx_mfu"] = g["mfu"] if g else None
    mfu = summary["gptj_train_gptx_mfu"]
    summary["targets"] = {
        "train_mfu_ge_55pct": None if mfu is None else mfu >= 0.55,
        "train_ge_2x_hf": None
        if summary["gptj_train_speedup_vs_hf"] is None
        else summary["gptj_train_speedup_vs_hf"] >= 2,
        "eval_ge_2x_hf": None
        if summary["gptj_eval_speedup_vs_hf"] is None
        else summary["gptj_eval_speedup_vs_hf"] >= 2,
    }
    return summary


def format_table(rows: list[dict[str, Any]]) -> str:
    headers = [
        "case",
        "model",
        "layers",
        "batch x seq",
        "impl",
        "setup",
        "status",
        "step s",
        "tokens/s",
        "MFU",
        "peak GiB",
    ]
    lines = []
    for r in rows:
        setup = []
        if r["mode"] == "train":
            setup.append("train fp32+bf16ac")
            setup.append("gptx-adamw" if r["optimizer"] == "gptx" else "torch-adamw")
        else:
            setup.append("eval bf16")
        if r["compile"]:
            setup.append(
                "compile" if r["compile_backend"] == "inductor" else f"compile:{r['compile_backend']}"
            )
        if r["activation_checkpointing"]:
            setup.append("ckpt")
        if r["impl"] == "hf" and r.get("attn_implementation"):
            setup.append(f"attn={r['attn_implementation']}")
        ok = r["status"] == "ok"
        lines.append(
            [
                r["case"],
                r["model"],
                f"{r['layers']}/{r['layers_full']}",
                f"{r['batch']} x {r['seq']}",
                r["impl"],
                " ".join(setup),
                r["status"],
                f"{r['mean_step_s']:.3f}" if ok else "-",
                f"{r['tokens_per_s']:,.0f}" if ok else "-",
                f"{r['mfu']:.1%}" if ok and r.get("mfu") is not None else "-",
                f"{r['peak_mem_gib']:.1f}" if r.get("peak_mem_gib") is not None else "-",
            ]
        )
    widths = [max(len(h), *(len(x[i]) for x in lines)) if lines else len(h) for i, h in enumerate(headers)]
    out = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    out.append("  ".join("-" * w for w in widths))
    out += ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in lines]
    return "\n".join(out)


def format_report(report: dict[str, Any]) -> str:
    env = report["env"]
    s = report["summary"]
    head = [
        f"gptx GPU benchmark  {env['date_utc']} UTC  commit {env['gptx_commit'] or '?'}",
        f"device: {env['device_name']} ({env['device']}, {env['device_memory_gib'] or '-'} GiB); "
        f"bf16 peak {env['bf16_peak_tflops'] or '?'} TFLOP/s ({env['peak_source'] or 'unknown'})",
        f"torch {env['torch']} (CUDA {env['torch_cuda']}); transformers {env['transformers'] or 'not installed'}; "
        f"python {env['python']}",
        f"gptx attention on flash SDPA: {env['gptx_sdpa_flash']}",
        f"warm-up {report['settings']['warmup']} + timed {report['settings']['steps']} steps per case",
        "",
        format_table(report["cases"]),
        "",
    ]
    for mode in ("train", "eval"):
        sp = s[f"gptj_{mode}_speedup_vs_hf"]
        layers = s[f"gptj_{mode}_layers"]
        at = f" at {layers} layers" if layers else ""
        head.append(f"GPT-J {mode}: best gptx vs Hugging Face{at} = {f'{sp:.2f}x' if sp else '-'}")
    head.append(f"targets: {json.dumps(s['targets'])}")
    head += [f"note: {n}" for n in report["notes"]]
    return "\n".join(head) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true", help="toy sizes on the CPU (or --device), seconds")
    p.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    p.add_argument("--out", default=None, help="output folder (default: $OUT, else ./gpu-bench-out)")
    p.add_argument(
        "--cases", default=None, help="comma-separated case keys (default: all, in priority order)"
    )
    p.add_argument("--warmup", type=int, default=None, help="warm-up steps per case (default 2, --tiny 1)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per case (default 5, --tiny 2)")
    p.add_argument("--layers", type=int, default=None, help="GPT-J layers in training rows (default: fit)")
    p.add_argument("--neox-layers", type=int, default=4, help="layers of the NeoX-20B-width model")
    p.add_argument("--memory-fraction", type=float, default=0.93, help="share of GPU memory the fit may plan")
    p.add_argument(
        "--time-budget", type=float, default=420.0, help="skip cases that would start after this (s)"
    )
    p.add_argument("--peak-tflops", type=float, default=None, help="override the bf16 peak used for MFU")
    p.add_argument(
        "--compile-backend", default=None, help="torch.compile backend (default inductor; --tiny aot_eager)"
    )
    p.add_argument("--list-cases", action="store_true", help="print the case keys and exit")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list_cases:
        print("\n".join(c.key for c in all_cases(args.tiny)))
        return 0
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() and not args.tiny else "cpu"))
    settings = Settings(
        device=device,
        tiny=args.tiny,
        warmup=args.warmup if args.warmup is not None else (1 if args.tiny else 2),
        steps=args.steps if args.steps is not None else (2 if args.tiny else 5),
        layers=args.layers,
        neox_layers=args.neox_layers if not args.tiny else min(args.neox_layers, 2),
        memory_fraction=args.memory_fraction,
        time_budget_s=args.time_budget,
        peak_tflops=args.peak_tflops,
        compile_backend=args.compile_backend or ("aot_eager" if args.tiny else "inductor"),
        chunk_logits=TINY_CHUNK_LOGITS if args.tiny else None,
    )
    out_dir = Path(args.out or os.environ.get("OUT") or "gpu-bench-out")
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    env = inspect_environment(settings)
    env["gptx_sdpa_flash"] = check_flash_attention(settings.device)
    free_memory(settings.device)
    print(f"environment: {json.dumps(env)}", flush=True)
    notes: list[str] = []
    if settings.tiny:
        notes.append("--tiny: toy sizes prove the code path; its timings and targets mean nothing")
    if settings.device.type != "cuda":
        notes.append(f"ran on {settings.device}: no GPU numbers; peak memory is not measured")
    if env["transformers"] is None:
        notes.append("transformers is not installed: Hugging Face rows skipped")
    wanted = set(args.cases.split(",")) if args.cases else None
    cases = [c for c in all_cases(settings.tiny) if wanted is None or c.key in wanted]
    if wanted:
        unknown = wanted - {c.key for c in all_cases(settings.tiny)}
        if unknown:
            print(f"error: unknown case(s) {sorted(unknown)}; see --list-cases", file=sys.stderr)
            return 2

    peak = env["bf16_peak_tflops"]
    needs_fit = any(c.family == "gptj" and c.mode == "train" for c in cases)
    train_layers, probes = (
        fit_training_layers(settings, peak, notes) if needs_fit else (full_layers("gptj", settings.tiny), [])
    )
    rows: list[dict[str, Any]] = []
    for case in cases:
        layers = case_layers(case, train_layers, settings)
        elapsed = time.perf_counter() - started
        if case.impl == "hf" and env["transformers"] is None:
            reason = "transformers not installed"
        elif case.full_depth and train_layers == full_layers("gptj", settings.tiny):
            reason = "the fitted GPT-J training rows already run at full depth"
        elif elapsed > settings.time_budget_s:
            reason = f"time budget: {elapsed:.0f} s > {settings.time_budget_s:.0f} s"
        else:
            reason = None
        if reason:
            rows.append({**base_row(case, layers, settings), "status": "skipped", "detail": reason})
            print(f"[{case.key}] skipped: {reason}", flush=True)
            continue
        print(f"[{case.key}] {layers} layers, batch {case.batch} x {case.seq} ...", flush=True)
        row = run_case(case, layers, settings, peak)
        rows.append(row)
        if row["status"] == "ok":
            print(
                f"[{case.key}] {row['tokens_per_s']:,.0f} tokens/s, step {row['mean_step_s']:.3f} s, "
                f"warm-up {row['warmup_s']:.1f} s, loss {row['losses'][-1]:.3f}",
                flush=True,
            )
        else:
            print(f"[{case.key}] {row['status']}: {row['detail']}", flush=True)

    report = {
        "format": "gptx-gpu-bench",
        "version": 1,
        "tiny": settings.tiny,
        "env": env,
        "settings": {
            "warmup": settings.warmup,
            "steps": settings.steps,
            "gptj_train_layers": train_layers,
            "neox_layers": settings.neox_layers,
            "memory_fraction": settings.memory_fraction,
            "compile_backend": settings.compile_backend,
            "chunk_logits": settings.chunk_logits,
            "argv": sys.argv[1:] if argv is None else argv,
        },
        "memory_probe": probes,
        "cases": rows,
        "summary": summarize(rows),
        "notes": notes,
        "wall_s": round(time.perf_counter() - started, 1),
    }
    text = format_report(report)
    print()
    print(text, end="", flush=True)
    write_text(out_dir / "gpu_bench.json", json.dumps(report, indent=2, default=str) + "\n")
    write_text(out_dir / "gpu_bench.txt", text)
    print(f"wrote {out_dir / 'gpu_bench.json'} and {out_dir / 'gpu_bench.txt'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
