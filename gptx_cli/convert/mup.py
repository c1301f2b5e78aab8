"""Fold muP multipliers into the weights (ModelZoo's muP -> sP checkpoint converter, on gptx names).

A muP model computes `embed(x) * embeddings_scale`, attention scores `q.k * alpha / d` (instead of
`1 / sqrt(d)`) and `logits * output_logits_alpha / width_mult`. Each multiplier is linear in one
weight, so a standard-parametrisation model with scaled weights computes the same function:

    embed.weight                 *= embeddings_scale
    q rows of layers.L.attn.qkv  *= attention_scale * sqrt(head_dim)   (weight and bias)
    lm_head.weight / .bias       *= output logits scale

ModelZoo scales the k projection instead of q; either gives the same scores. A tied embedding whose
two scales differ is untied (ModelZoo sets share_embedding_weights: false for the same reason).
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable

import torch

from gptx_cli.config.spec import ModelConfig
from gptx_cli.model.transformer import attention_scale, output_logits_scale

Getter = Callable[[str], torch.Tensor]
_QKV = re.compile(r"layers\.\d+\.attn\.qkv\.(weight|bias)")


def mup_scales(cfg: ModelConfig) -> tuple[float, float, float]:
    """(embedding, q, logits) factors that fold `cfg`'s multipliers into the weights; all 1.0 under sP."""
    q_scale = attention_scale(cfg) * math.sqrt(cfg.head_dim)
    logits = output_logits_scale(cfg)
    return float(cfg.embeddings_scale), q_scale, 1.0 if logits is None else logits


def needs_folding(cfg: ModelConfig) -> bool:
    return mup_scales(cfg) != (1.0, 1.0, 1.0) or cfg.uses_mup


def fold_mup(cfg: ModelConfig, keys: list[str], get: Getter) -> tuple[ModelConfig, list[str], Getter]:
    """The standard-parametrisation config, key list and getter computing the same function as `cfg`."""
    emb, q_scale, logits = mup_scales(cfg)
    untie = cfg.share_embedding_weights and emb != logits
    sp_cfg = dataclasses.replace(
        cfg,
        mup_base_hidden_size=None,
        mup_base_filter_size=None,
        embeddings_scale=1.0,
        output_logits_alpha=None,
        scale_qk_dot_by_d=False,
        attention_logits_alpha=1.0,
        attention_type="scaled_dot_product",
        share_embedding_weights=cfg.share_embedding_weights and not untie,
    )
    hidden = cfg.hidden_size

    def scaled(t: torch.Tensor, factor: float) -> torch.Tensor:
        # In float64 so the only rounding is the final cast back to the tensor's dtype.
        return t if factor == 1.0 else (t.to(torch.float64) * factor).to(t.dtype)

    def folded_get(name: str) -> torch.Tensor:
        if name == "embed.weight":
            return scaled(get(name), emb)
        if name == "lm_head.weight" and untie:
            return scaled(get("embed.weight"), logits)
        if name in ("lm_head.weight", "lm_head.bias"):
            return scaled(get(name), logits)
        if _QKV.fullmatch(name) and q_scale != 1.0:
            t = get(name).clone()
            t[:hidden] = scaled(t[:hidden], q_scale)
            return t
        return get(name)

    new_keys = list(keys) + (["lm_head.weight"] if untie and "lm_head.weight" not in keys else [])
    return sp_cfg, new_keys, folded_get
