"""Hugging Face GPT-J / GPT-NeoX <-> gptx: config.json <-> ModelConfig, and streaming state-dict adapters.

State dicts are never held whole: `to_gptx(cfg, hf_keys, get)` and `to_hf(cfg, gptx_keys, get, family)`
take the source key list and a `get(name)` that loads one tensor, and yield `(name, tensor)` pairs one
at a time (each output needs at most three source tensors).

Layouts:
- GPT-NeoX `query_key_value` is fused per head, rows `[heads, 3, head_dim]`; gptx's `attn.qkv` is
  `[3, heads, head_dim]` (q of all heads, then k, then v).
- GPT-J HF rotates interleaved pairs `(2i, 2i+1)`; gptx keeps ModelZoo's half split. The adapter
  permutes the first `rotary_dim` rows of every q/k head (even rows first, then odd rows), which turns
  one layout into the other exactly (q.k is unchanged up to summation order) and is undone bit for bit
  on the way back. So a converted GPT-J has `rotary_interleaved: false` like every gptx checkpoint.
- Biases HF always has but the gptx config lacks (GPT-J `lm_head.bias`, MLP biases, a NeoX attention
  output bias when only q/k/v have one) are written as zeros; a tied LayerNorm is written into both
  NeoX LayerNorms. Both are exact. What HF cannot express (attention biases in GPT-J, an LM-head bias
  in NeoX, muP multipliers) is a ConfigError.
- HF non-persistent buffers (`attn.bias`, `attn.masked_bias`, `rotary_emb.inv_freq`, ...) are ignored;
  any other unknown key, a missing key or a wrong shape raises CheckpointError naming the key.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Literal

import torch
from torch import Tensor

from gptx_cli.config.spec import ModelConfig
from gptx_cli.errors import CheckpointError, ConfigError
from gptx_cli.model.transformer import parameter_shapes

Family = Literal["gptj", "gpt-neox"]
Getter = Callable[[str], Tensor]

_IGNORED_HF_KEYS = re.compile(
    r"(^|\.)(attn|attention)\.(bias|masked_bias)$|rotary_emb\.(inv_freq|original_inv_freq|embed_positions)$"
)


# -- config.json <-> ModelConfig -----------------------------------------------------------------


def hf_family(config_json: dict[str, Any]) -> Family:
    model_type = str(config_json.get("model_type", "")).replace("-", "_")
    archs = " ".join(config_json.get("architectures") or [])
    if model_type == "gptj" or "GPTJ" in archs:
        return "gptj"
    if model_type == "gpt_neox" or "GPTNeoX" in archs:
        return "gpt-neox"
    raise ConfigError(
        f"config.json: model_type {config_json.get('model_type')!r} is not GPT-J or GPT-NeoX",
        hint="gptx converts GPTJForCausalLM and GPTNeoXForCausalLM checkpoints",
    )


def model_config_from_hf(config_json: dict[str, Any]) -> ModelConfig:
    """A gptx ModelConfig computing the same function as the HF model described by config.json."""
    c = config_json
    if hf_family(c) == "gptj":
        hidden = c.get("n_embd", c.get("hidden_size", 4096))
        heads = c.get("n_head", c.get("num_attention_heads", 16))
        return ModelConfig(
            name="gptj",
            vocab_size=c.get("vocab_size", 50400),
            hidden_size=hidden,
            num_hidden_layers=c.get("n_layer", c.get("num_hidden_layers", 28)),
            num_heads=heads,
            filter_size=c.get("n_inner") or 4 * hidden,
            max_position_embeddings=c.get("n_positions", c.get("max_position_embeddings", 2048)),
            rotary_dim=c.get("rotary_dim") or hidden // heads,
            rope_theta=10000.0,  # fixed in HF GPT-J
            rotary_interleaved=False,  # the adapter permutes q/k rows into the half layout
            use_untied_layer_norm=False,
            use_parallel_residual=True,
            use_projection_bias_in_attention=False,
            use_ffn_bias_in_attention=False,
            use_ffn_bias=True,
            use_bias_in_output=True,
            share_embedding_weights=bool(c.get("tie_word_embeddings", False)),
            nonlinearity=c.get("activation_function", "gelu_new"),
            layer_norm_epsilon=c.get("layer_norm_epsilon", 1e-5),
            embedding_dropout_rate=c.get("embd_pdrop", 0.0),
            attention_dropout_rate=c.get("attn_pdrop", 0.0),
            residual_dropout_rate=c.get("resid_pdrop", 0.0),
            initializer_range=c.get("initializer_range", 0.02),
        )
    hidden = c.get("hidden_size", 6144)
    heads = c.get("num_attention_heads", 64)
    rope = c.get("rope_parameters") or c.get("rope_scaling") or {}
    if rope.get("rope_type", rope.get("type", "default")) not in ("default", None):
        raise ConfigError(
            f"config.json: rope type {rope.get('rope_type')!r} is not supported (default RoPE only)"
        )
    rotary_pct = rope.get("partial_rotary_factor", c.get("rotary_pct", 0.25))
    theta = rope.get("rope_theta", c.get("rotary_emb_base", c.get("rope_theta", 10000.0)))
    attention_bias = bool(c.get("attention_bias", True))
    return ModelConfig(
        name="gpt-neox",
        vocab_size=c.get("vocab_size", 50432),
        hidden_size=hidden,
        num_hidden_layers=c.get("num_hidden_layers", 44),
        num_heads=heads,
        filter_size=c.get("intermediate_size", 4 * hidden),
        max_position_embeddings=c.get("max_position_embeddings", 2048),
        rotary_dim=int((hidden // heads) * rotary_pct),  # HF's own rounding
        rope_theta=float(theta),
        rotary_interleaved=False,
        use_untied_layer_norm=True,
        use_parallel_residual=bool(c.get("use_parallel_residual", True)),
        use_projection_bias_in_attention=attention_bias,
        use_ffn_bias_in_attention=attention_bias,
        use_ffn_bias=True,
        use_bias_in_output=False,
        share_embedding_weights=bool(c.get("tie_word_embeddings", False)),
        nonlinearity=c.get("hidden_act", "gelu"),
        layer_norm_epsilon=c.get("layer_norm_eps", 1e-5),
        embedding_dropout_rate=c.get("hidden_dropout", 0.0),
        attention_dropout_rate=c.get("attention_dropout", 0.0),
        residual_dropout_rate=c.get("hidden_dropout", 0.0),
        initializer_range=c.get("initializer_range", 0.02),
    )


def _check_expressible(cfg: ModelConfig, family: Family) -> None:
    def bad(key: str, why: str) -> ConfigError:
        return ConfigError(f"model.{key}: {why}; Hugging Face {family} cannot express it")

    if cfg.position_embedding_type != "rotary":
        raise bad("position_embedding_type", f"{cfg.position_embedding_type!r} is not rotary")
    if cfg.uses_mup or cfg.embeddings_scale != 1.0:
        raise bad("mup_base_hidden_size", "muP multipliers (embeddings_scale, output logits scale) are set")
    if (
        cfg.attention_type != "scaled_dot_product"
        or cfg.scale_qk_dot_by_d
        or cfg.attention_logits_alpha != 1.0
    ):
        raise bad("attention_type", "attention scores are not scaled by 1/sqrt(head_dim)")
    if family == "gptj":
        if cfg.use_untied_layer_norm or not cfg.use_parallel_residual:
            raise bad("use_untied_layer_norm", "GPT-J has one LayerNorm and a parallel residual")
        if cfg.use_projection_bias_in_attention or cfg.use_ffn_bias_in_attention:
            raise bad("use_projection_bias_in_attention", "GPT-J attention has no biases")
        if cfg.rope_theta != 10000.0:
            raise bad("rope_theta", "HF GPT-J fixes rope_theta at 10000")
    else:
        if cfg.use_bias_in_output:
            raise bad("use_bias_in_output", "GPT-NeoX embed_out has no bias")


def hf_config_from_model_config(
    cfg: ModelConfig, family: Family, *, dtype: str = "float32"
) -> dict[str, Any]:
    """config.json for an HF model computing the same function as `cfg` (ConfigError if impossible)."""
    _check_expressible(cfg, family)
    rotary_dim = cfg.resolved_rotary_dim
    if family == "gptj":
        return {
            "architectures": ["GPTJForCausalLM"],
            "model_type": "gptj",
            "vocab_size": cfg.vocab_size,
            "n_embd": cfg.hidden_size,
            "n_layer": cfg.num_hidden_layers,
            "n_head": cfg.num_heads,
            "n_inner": cfg.filter_size,
            "n_positions": cfg.max_position_embeddings,
            "rotary_dim": rotary_dim,
            "activation_function": cfg.nonlinearity,
            "layer_norm_epsilon": cfg.layer_norm_epsilon,
            "embd_pdrop": cfg.embedding_dropout_rate,
            "attn_pdrop": cfg.attention_dropout_rate,
            "resid_pdrop": cfg.residual_dropout_rate,
            "initializer_range": cfg.initializer_range,
            "tie_word_embeddings": cfg.share_embedding_weights,
            **_special_tokens(cfg, 50256),
            "use_cache": True,
            "torch_dtype": dtype,  # transformers < 5
            "dtype": dtype,
        }
    rotary_pct = rotary_dim / cfg.head_dim
    if int(cfg.head_dim * rotary_pct) != rotary_dim:
        raise ConfigError(
            f"model.rotary_dim: {rotary_dim} is not reproducible as rotary_pct of head_dim {cfg.head_dim}"
        )
    if cfg.embedding_dropout_rate != cfg.residual_dropout_rate:
        raise ConfigError(
            "model.embedding_dropout_rate: HF GPT-NeoX uses one hidden_dropout for both dropouts"
        )
    return {
        "architectures": ["GPTNeoXForCausalLM"],
        "model_type": "gpt_neox",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "num_hidden_layers": cfg.num_hidden_layers,
        "num_attention_heads": cfg.num_heads,
        "intermediate_size": cfg.filter_size,
        "max_position_embeddings": cfg.max_position_embeddings,
        "rotary_pct": rotary_pct,
        "rotary_emb_base": cfg.rope_theta,
        "hidden_act": cfg.nonlinearity,
        "layer_norm_eps": cfg.layer_norm_epsilon,
        "use_parallel_residual": cfg.use_parallel_residual,
        "attention_bias": cfg.use_projection_bias_in_attention or cfg.use_ffn_bias_in_attention,
        "attention_dropout": cfg.attention_dropout_rate,
        "hidden_dropout": cfg.residual_dropout_rate,
        "initializer_range": cfg.initializer_range,
        "tie_word_embeddings": cfg.share_embedding_weights,
        **_special_tokens(cfg, 0),
        "use_cache": True,
        "torch_dtype": dtype,  # transformers < 5
        "dtype": dtype,
    }


def _special_tokens(cfg: ModelConfig, token: int) -> dict[str, int]:
    """The family's usual bos/eos id (GPT-2 / NeoX tokenizer), when the vocabulary has it."""
    return {"bos_token_id": token, "eos_token_id": token} if token < cfg.vocab_size else {}


# -- q/k row layouts -----------------------------------------------------------------------------


def _half_from_interleaved(head_dim: int, rotary_dim: int) -> Tensor:
    """Row order taking interleaved rotary pairs to the half split, within one head."""
    return torch.cat(
        (torch.arange(0, rotary_dim, 2), torch.arange(1, rotary_dim, 2), torch.arange(rotary_dim, head_dim))
    )


def _permute_heads(w: Tensor, heads: int, head_dim: int, order: Tensor) -> Tensor:
    """Reorder the rows of each head of a [heads*head_dim, ...] weight or [heads*head_dim] bias."""
    rest = w.shape[1:]
    return w.reshape(heads, head_dim, *rest)[:, order].reshape(heads * head_dim, *rest)


# -- key maps ------------------------------------------------------------------------------------


class _Rule:
    """One gptx tensor = combine(HF tensors); split does the inverse (None for HF-only zero fills)."""

    def __init__(
        self,
        gptx: str,
        hf: list[str],
        combine: Callable[[list[Tensor]], Tensor],
        split: Callable[[Tensor], list[Tensor]],
    ) -> None:
        self.gptx, self.hf, self.combine, self.split = gptx, hf, combine, split
        self.present = True  # False: the gptx config lacks this tensor
        self.shape: tuple[int, ...] | None = None


def _identity_rule(gptx: str, hf: str) -> _Rule:
    return _Rule(gptx, [hf], lambda ts: ts[0], lambda t: [t])


def _rules(cfg: ModelConfig, family: Family) -> list[_Rule]:
    shapes = parameter_shapes(cfg)
    heads, head_dim, hidden = cfg.num_heads, cfg.head_dim, cfg.hidden_size
    rotary_dim = cfg.resolved_rotary_dim
    half = _half_from_interleaved(head_dim, rotary_dim)
    inv_half = torch.argsort(half)
    rules: list[_Rule] = []
    if family == "gptj":
        # HF GPT-J is interleaved: permute to half unless the gptx model itself runs interleaved.
        to_g, to_h = (None, None) if cfg.rotary_interleaved else (half, inv_half)
        pre = "transformer."
        rules.append(_identity_rule("embed.weight", pre + "wte.weight"))
        for i in range(cfg.num_hidden_layers):
            g, h = f"layers.{i}.", f"{pre}h.{i}."
            rules += [_identity_rule(g + f"ln_1.{p}", h + f"ln_1.{p}") for p in ("weight", "bias")]

            def qkv_combine(ts: list[Tensor], order: Tensor | None = to_g) -> Tensor:
                q, k, v = ts
                if order is not None:
                    q, k = (
                        _permute_heads(q, heads, head_dim, order),
                        _permute_heads(k, heads, head_dim, order),
                    )
                return torch.cat((q, k, v), dim=0)

            def qkv_split(t: Tensor, order: Tensor | None = to_h) -> list[Tensor]:
                q, k, v = t.chunk(3, dim=0)
                if order is not None:
                    q, k = (
                        _permute_heads(q, heads, head_dim, order),
                        _permute_heads(k, heads, head_dim, order),
                    )
                return [q.contiguous(), k.contiguous(), v.contiguous()]

            rules.append(
                _Rule(
                    g + "attn.qkv.weight",
                    [h + f"attn.{x}_proj.weight" for x in "qkv"],
                    qkv_combine,
                    qkv_split,
                )
            )
            rules.append(_identity_rule(g + "attn.out.weight", h + "attn.out_proj.weight"))
            for p in ("weight", "bias"):
                rules.append(_identity_rule(g + f"mlp.fc_in.{p}", h + f"mlp.fc_in.{p}"))
                rules.append(_identity_rule(g + f"mlp.fc_out.{p}", h + f"mlp.fc_out.{p}"))
        rules += [_identity_rule(f"ln_f.{p}", f"{pre}ln_f.{p}") for p in ("weight", "bias")]
        rules.append(_identity_rule("lm_head.weight", "lm_head.weight"))
        rules.append(_identity_rule("lm_head.bias", "lm_head.bias"))
    else:
        to_g2, to_h2 = (inv_half, half) if cfg.rotary_interleaved else (None, None)
        pre = "gpt_neox."

        def qkv_from_neox(ts: list[Tensor], order: Tensor | None = to_g2) -> Tensor:
            t = ts[0]
            rest = t.shape[1:]
            t = t.reshape(heads, 3, head_dim, *rest).transpose(0, 1)  # -> [3, heads, head_dim, ...]
            if order is not None:
                t = torch.cat((t[:2, :, order], t[2:]), dim=0)
            return t.reshape(3 * hidden, *rest).contiguous()

        def qkv_to_neox(t: Tensor, order: Tensor | None = to_h2) -> list[Tensor]:
            rest = t.shape[1:]
            t = t.reshape(3, heads, head_dim, *rest)
            if order is not None:
                t = torch.cat((t[:2, :, order], t[2:]), dim=0)
            return [t.transpose(0, 1).reshape(3 * hidden, *rest).contiguous()]

        rules.append(_identity_rule("embed.weight", pre + "embed_in.weight"))
        for i in range(cfg.num_hidden_layers):
            g, h = f"layers.{i}.", f"{pre}layers.{i}."
            for p in ("weight", "bias"):
                rules.append(_identity_rule(g + f"ln_1.{p}", h + f"input_layernorm.{p}"))
                if cfg.use_untied_layer_norm:
                    rules.append(_identity_rule(g + f"ln_2.{p}", h + f"post_attention_layernorm.{p}"))
                else:  # a tied LayerNorm is the same LayerNorm twice
                    rules.append(
                        _Rule(
                            g + f"ln_1.{p}",
                            [h + f"post_attention_layernorm.{p}"],
                            lambda ts: ts[0],
                            lambda t: [t.clone()],
                        )
                    )
                rules.append(
                    _Rule(
                        g + f"attn.qkv.{p}",
                        [h + f"attention.query_key_value.{p}"],
                        qkv_from_neox,
                        qkv_to_neox,
                    )
                )
                rules.append(_identity_rule(g + f"attn.out.{p}", h + f"attention.dense.{p}"))
                rules.append(_identity_rule(g + f"mlp.fc_in.{p}", h + f"mlp.dense_h_to_4h.{p}"))
                rules.append(_identity_rule(g + f"mlp.fc_out.{p}", h + f"mlp.dense_4h_to_h.{p}"))
        rules += [_identity_rule(f"ln_f.{p}", f"{pre}final_layer_norm.{p}") for p in ("weight", "bias")]
        rules.append(_identity_rule("lm_head.weight", "embed_out.weight"))
    # Attach each rule's gptx shape; rules for tensors the gptx config lacks are kept separately so
    # to_hf can zero-fill them (HF always has them) and to_gptx can reject them.
    for r in rules:
        r.present = r.gptx in shapes
        r.shape = shapes[r.gptx] if r.present else _hf_only_shape(cfg, r.gptx)
    return rules


def _hf_only_shape(cfg: ModelConfig, gptx: str) -> tuple[int, ...] | None:
    """Shape of an HF tensor whose gptx counterpart the config omits (filled with zeros on export)."""
    if gptx.endswith("qkv.bias"):
        return (3 * cfg.hidden_size,)
    if gptx.endswith(("attn.out.bias", "fc_out.bias")):
        return (cfg.hidden_size,)
    if gptx.endswith("fc_in.bias"):
        return (cfg.filter_size,)
    if gptx == "lm_head.bias":
        return (cfg.vocab_size,)
    return None  # lm_head.weight of a tied model, ln_2 of a tied LayerNorm: HF ties / duplicates it


_NEOX_HEAD_ALIASES = {"lm_head.weight": "embed_out.weight"}


def _detect_family(keys: Iterable[str]) -> Family:
    keys = list(keys)
    if any(k.startswith("transformer.") for k in keys):
        return "gptj"
    if any(k.startswith("gpt_neox.") for k in keys):
        return "gpt-neox"
    raise CheckpointError("state dict has neither transformer.* (GPT-J) nor gpt_neox.* (GPT-NeoX) keys")


def _check_shape(name: str, t: Tensor, shape: tuple[int, ...] | None, source: str) -> None:
    if shape is not None and tuple(t.shape) != tuple(shape):
        raise CheckpointError(f"{source}: tensor {name} has shape {list(t.shape)}, expected {list(shape)}")


def to_gptx(cfg: ModelConfig, hf_keys: Iterable[str], get: Getter) -> Iterator[tuple[str, Tensor]]:
    """Stream an HF GPT-J / GPT-NeoX state dict as gptx tensors (yielded in gptx parameter order)."""
    # transformers >= 5 names the NeoX head lm_head.weight; published checkpoints say embed_out.weight.
    actual = {_NEOX_HEAD_ALIASES.get(k, k) if k.startswith("lm_head") else k: k for k in hf_keys}
    hf_keys = list(actual)
    family = _detect_family(hf_keys)
    if family == "gptj":
        actual = {k: k for k in actual.values()}
        hf_keys = list(actual)
    rules = _rules(cfg, family)
    wanted = [r for r in rules if r.present]
    known = {k for r in wanted for k in r.hf}
    if cfg.share_embedding_weights:  # HF may still list the tied head
        known.add("lm_head.weight" if family == "gptj" else "embed_out.weight")
    for key in hf_keys:
        if key not in known and not _IGNORED_HF_KEYS.search(key):
            raise CheckpointError(f"HF checkpoint: unexpected key {key} for this {family} config")
    present = set(hf_keys)
    seen: set[str] = set()
    for r in wanted:
        for k in r.hf:
            if k not in present:
                raise CheckpointError(f"HF checkpoint: missing key {k}")
        if r.gptx in seen:  # tied LayerNorm read a second time from post_attention_layernorm: skip
            continue
        sources = []
        for k in r.hf:
            sources.append(get(actual[k]))
        if len(r.hf) == 3:  # GPT-J q/k/v: each [hidden, hidden]
            for k, t in zip(r.hf, sources, strict=True):
                _check_shape(k, t, (cfg.hidden_size, cfg.hidden_size), "HF checkpoint")
        out = r.combine(sources)
        _check_shape(r.hf[0] if len(r.hf) == 1 else r.gptx, out, r.shape, "HF checkpoint")
        seen.add(r.gptx)
        yield r.gptx, out


def to_hf(
    cfg: ModelConfig, gptx_keys: Iterable[str], get: Getter, family: Family
) -> Iterator[tuple[str, Tensor]]:
    """Stream a gptx state dict as an HF `family` state dict (zeros for biases HF has and gptx lacks)."""
    _check_expressible(cfg, family)
    rules = _rules(cfg, family)
    expected = {r.gptx for r in rules if r.present}
    gptx_keys = list(gptx_keys)
    for key in gptx_keys:
        if key not in expected:
            raise CheckpointError(f"gptx checkpoint: unexpected key {key} for this config")
    missing = expected - set(gptx_keys)
    if missing:
        raise CheckpointError(f"gptx checkpoint: missing key {sorted(missing)[0]}")
    zeros_dtype: torch.dtype | None = None
    for r in rules:
        if r.present:
            t = get(r.gptx)
            if zeros_dtype is None:
                zeros_dtype = t.dtype
            _check_shape(r.gptx, t, r.shape, "gptx checkpoint")
            parts = r.split(t)
        elif r.shape is not None:
            parts = [torch.zeros(r.shape, dtype=zeros_dtype)]
        else:
            continue
        yield from zip(r.hf, parts, strict=True)
