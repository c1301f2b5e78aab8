"""Parameter count, training FLOPs per token and a training-memory estimate from a ModelConfig.

Torch-free (validate-config --summary uses it and must not import torch); nothing is allocated.

The parameter count is exact and equals Hugging Face's for the same architecture (checked in
tests/config against GPTJForCausalLM / GPTNeoXForCausalLM built on the meta device):
GPT-J 6B, vocab 50400 -> 6,050,882,784; GPT-NeoX-20B, vocab 50432 -> 20,554,567,680.
"""

from __future__ import annotations

from typing import Any

from gptx_cli.config.lora import lora_from_raw, trainable_parameters
from gptx_cli.config.spec import ModelConfig, PrecisionSpec, RunSpec

# Optimizer state in bytes per parameter (fp32 state): Adam-style keep two moments.
OPTIMIZER_STATE_BYTES = {
    "adamw": 8,
    "adam": 8,
    "lamb": 8,
    "adamax": 8,
    "nadam": 8,
    "radam": 8,
    "lion": 4,
    "sgd": 4,  # momentum buffer (0 without momentum; the estimate assumes one)
    "rmsprop": 4,
    "adagrad": 4,
    "adafactor": 4,  # factored second moment is far smaller; this is an upper bound with beta1
}


def parameter_counts(cfg: ModelConfig) -> dict[str, int]:
    """Parameters per part: embedding, blocks (all layers), final_norm, lm_head, and total."""
    h, f, v, n_layers = cfg.hidden_size, cfg.filter_size, cfg.vocab_size, cfg.num_hidden_layers
    norms = 2 if cfg.use_untied_layer_norm else 1  # LayerNorm weight + bias each
    block = norms * 2 * h
    block += 3 * h * h + (3 * h if cfg.use_projection_bias_in_attention else 0)  # q, k, v
    block += h * h + (h if cfg.use_ffn_bias_in_attention else 0)  # attention output
    block += h * f + f * h + ((f + h) if cfg.use_ffn_bias else 0)  # MLP in / out
    embedding = v * h
    lm_head = (0 if cfg.share_embedding_weights else v * h) + (v if cfg.use_bias_in_output else 0)
    parts = {
        "embedding": embedding,
        "blocks": n_layers * block,
        "final_norm": 2 * h,
        "lm_head": lm_head,
    }
    parts["total"] = sum(parts.values())
    return parts


def count_parameters(cfg: ModelConfig) -> int:
    """The exact number of trainable parameters (tied embeddings counted once)."""
    return parameter_counts(cfg)["total"]


def flops_per_token(cfg: ModelConfig, seq_len: int) -> int:
    """Training FLOPs per token, PaLM's formula (Chowdhery et al. 2022, appendix B): 6N + 12·L·H·Q·T.

    N = count_parameters(cfg), L layers, H heads, Q head dimension, T = seq_len. Forward + backward
    of every weight matmul (6N) plus the attention score and value matmuls (12·L·H·Q·T).
    """
    n = count_parameters(cfg)
    return 6 * n + 12 * cfg.num_hidden_layers * cfg.num_heads * cfg.head_dim * seq_len


def activation_bytes(
    cfg: ModelConfig,
    micro_batch_size: int,
    seq_len: int,
    precision: PrecisionSpec | None = None,
    activation_checkpointing: bool = False,
) -> int:
    """Activations kept for the backward pass of one micro-batch (an upper-ish estimate).

    Per block, Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large Transformer
    Models", eq. 2) give s·b·h·34 + 5·a·s²·b bytes with 16-bit activations and 1-byte dropout masks,
    for the usual MLP width 4h; here the MLP part scales with filter_size and fp32 runs count 4
    bytes per value. The attention-score term assumes the scores are materialised (true for the
    math SDPA path on CPU; flash attention needs less, so this stays an upper bound). With
    activation checkpointing each block keeps only its input, plus one block's full set during
    recomputation. The logits (fp32) and their gradient come on top.
    """
    b, s, h, a = micro_batch_size, seq_len, cfg.hidden_size, cfg.num_heads
    half = precision is not None and precision.autocast_dtype is not None
    scale = 1.0 if half else 2.0  # the formula counts 2-byte values
    # 34·s·b·h splits into 10·s·b·h for attention/LayerNorm parts and 24·s·b·h for an MLP of width 4h
    per_block = (10 * s * b * h + 6 * s * b * cfg.filter_size) * scale + 5 * a * s * s * b * scale
    if activation_checkpointing:
        stored = cfg.num_hidden_layers * s * b * h * (2 if half else 4) + per_block
    else:
        stored = cfg.num_hidden_layers * per_block
    logits = 2 * s * b * cfg.vocab_size * 4
    embedding = s * b * h * (2 if half else 4)
    return int(stored + logits + embedding)


def memory_estimate(
    cfg: ModelConfig,
    micro_batch_size: int,
    seq_len: int,
    precision: PrecisionSpec | None = None,
    optimizer: str = "adamw",
    activation_checkpointing: bool = False,
    trainable: int | None = None,
) -> dict[str, int]:
    """Bytes for training one process that holds the whole model (no sharding).

    gptx keeps fp32 master weights and gradients and autocasts the compute, so weights and grads are
    4 bytes per parameter whatever the precision; the optimizer state depends on the optimizer
    (AdamW: two fp32 moments = 8 bytes). Keys: weights, grads, optimizer_state, activations, total.

    `trainable`: a LoRA run's adapter parameters (config.lora.trainable_parameters): they add to the
    weights, and only they have gradients and optimizer state.
    """
    n = count_parameters(cfg)
    state = OPTIMIZER_STATE_BYTES.get(optimizer.lower(), 8)
    t = n if trainable is None else trainable
    out = {
        "weights": 4 * (n if trainable is None else n + trainable),
        "grads": 4 * t,
        "optimizer_state": state * t,
        "activations": activation_bytes(cfg, micro_batch_size, seq_len, precision, activation_checkpointing),
    }
    out["total"] = sum(out.values())
    return out


def run_summary(spec: RunSpec) -> dict[str, Any]:
    """What `validate-config --summary` reports for one run: counts, FLOPs/token, memory per process."""
    cfg = spec.model
    seq_len = cfg.max_position_embeddings
    if spec.train_data is not None and spec.train_data.max_sequence_length:
        seq_len = spec.train_data.max_sequence_length
    micro = spec.backend.micro_batch_size or 1
    trainable = lora_trainable(spec)
    mem = memory_estimate(
        cfg,
        micro,
        seq_len,
        spec.precision,
        spec.optimizer.name,
        spec.backend.activation_checkpointing,
        trainable,
    )
    return {
        "model": cfg.name,
        # ModelZoo spells NeoX `name: gptj` + untied LayerNorms: say which architecture it is.
        "architecture": "gpt-neox" if cfg.use_untied_layer_norm else "gptj",
        "parameters": count_parameters(cfg),
        "trainable_parameters": count_parameters(cfg) if trainable is None else trainable,
        "lora": trainable is not None,
        "parameter_parts": parameter_counts(cfg),
        "seq_len": seq_len,
        "flops_per_token": flops_per_token(cfg, seq_len),
        "memory": {
            "micro_batch_size": micro,
            "precision": spec.precision.autocast_dtype or "float32",
            "optimizer": spec.optimizer.name,
            "activation_checkpointing": spec.backend.activation_checkpointing,
            "bytes": mem,
        },
    }


def lora_trainable(spec: RunSpec) -> int | None:
    """The adapter parameters of a run with ModelZoo's Lora callback (None without it)."""
    return trainable_parameters(spec.model, lora_from_raw(spec.raw, spec.source))
