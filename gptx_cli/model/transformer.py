"""One decoder for GPT-J and GPT-NeoX; the two differ only by flags in `ModelConfig`.

Block (pre-LayerNorm), with `a = attn(ln_1(x))`:

- parallel residual, one shared LayerNorm (GPT-J, `use_untied_layer_norm: false`):
  `x + a + mlp(ln_1(x))`
- parallel residual, two LayerNorms (GPT-NeoX, `use_untied_layer_norm: true`): `x + a + mlp(ln_2(x))`
- sequential residual (`use_parallel_residual: false`, some Pythia-style NeoX models):
  `y = x + a; y + mlp(ln_2(y))` (ln_1 again when the LayerNorm is tied)

Rotary position embeddings act on the first `rotary_dim` features of every query/key head; the rest
pass through. The default layout is ModelZoo's and GPT-NeoX's half split (feature `i` pairs with
`i + rotary_dim/2`); `rotary_interleaved: true` selects GPT-J's pairs `(2i, 2i+1)`. Both compute the
same function once the q/k rows are permuted, which is what the Hugging Face GPT-J adapter does
(`gptx_cli.model.hf`), so gptx checkpoints are normally in the half layout.

Parameter names (what `model.safetensors` in a gptx checkpoint holds; L = layer index):

| name | shape | present when |
|---|---|---|
| `embed.weight` | [vocab, hidden] | always |
| `layers.L.ln_1.weight`, `layers.L.ln_1.bias` | [hidden] | always |
| `layers.L.ln_2.weight`, `layers.L.ln_2.bias` | [hidden] | `use_untied_layer_norm` |
| `layers.L.attn.qkv.weight` | [3*hidden, hidden] | always: rows are q (all heads), then k, then v; head h of q is rows [h*head_dim, (h+1)*head_dim) |
| `layers.L.attn.qkv.bias` | [3*hidden] | `use_projection_bias_in_attention` |
| `layers.L.attn.out.weight` / `.bias` | [hidden, hidden] / [hidden] | bias: `use_ffn_bias_in_attention` |
| `layers.L.mlp.fc_in.weight` / `.bias` | [filter, hidden] / [filter] | bias: `use_ffn_bias` |
| `layers.L.mlp.fc_out.weight` / `.bias` | [hidden, filter] / [hidden] | bias: `use_ffn_bias` |
| `ln_f.weight`, `ln_f.bias` | [hidden] | always |
| `lm_head.weight` | [vocab, hidden] | `share_embedding_weights: false` (tied models reuse `embed.weight`) |
| `lm_head.bias` | [vocab] | `use_bias_in_output` |

Speed notes: q, k and v come from one fused matmul; rotary tables are computed once per device and
dtype and cached; attention goes through `F.scaled_dot_product_attention` (flash / memory-efficient
kernels on GPU; their softmax accumulates in fp32, which is where the references keep it too).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gptx_cli.config.spec import ModelConfig
from gptx_cli.errors import ConfigError
from gptx_cli.model.doc_attention import AttentionMask


def _gelu_tanh(x: Tensor) -> Tensor:
    return F.gelu(x, approximate="tanh")


def _quick_gelu(x: Tensor) -> Tensor:
    return x * torch.sigmoid(1.702 * x)


def _identity(x: Tensor) -> Tensor:
    return x


# Names accepted in `nonlinearity` (ModelZoo) and HF `activation_function` / `hidden_act`.
# gelu_new, gelu_fast and gelu_pytorch_tanh are the same tanh approximation (HF spells it out in
# elementwise ops; torch's fused kernel agrees to within an ulp and is much faster in backward).
ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "gelu": F.gelu,
    "gelu_new": _gelu_tanh,
    "gelu_fast": _gelu_tanh,
    "gelu_pytorch_tanh": _gelu_tanh,
    "gelu_tanh": _gelu_tanh,
    "quick_gelu": _quick_gelu,
    "relu": F.relu,
    "silu": F.silu,
    "swish": F.silu,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "linear": _identity,
}


def activation(name: str) -> Callable[[Tensor], Tensor]:
    try:
        return ACTIVATIONS[name.lower()]
    except KeyError:
        raise ConfigError(
            f"model.nonlinearity: {name!r} is not supported", hint=f"one of {', '.join(sorted(ACTIVATIONS))}"
        ) from None


def attention_scale(cfg: ModelConfig) -> float:
    """The factor applied to q.k (ModelZoo: alpha/sqrt(d), or alpha/d under muP's scale_qk_dot_by_d)."""
    if cfg.attention_type == "dot_product":
        return 1.0
    if cfg.attention_type != "scaled_dot_product":
        raise ConfigError(
            f"model.attention_type: {cfg.attention_type!r} is not supported",
            hint="scaled_dot_product or dot_product",
        )
    depth = cfg.head_dim if cfg.scale_qk_dot_by_d else math.sqrt(cfg.head_dim)
    return cfg.attention_logits_alpha / depth


def output_logits_scale(cfg: ModelConfig) -> float | None:
    """muP: logits * output_logits_alpha / width_mult (or / sqrt(width_mult)); None outside muP."""
    if not cfg.mup_base_hidden_size:
        return None
    width_mult = cfg.hidden_size / cfg.mup_base_hidden_size
    alpha = cfg.output_logits_alpha or 1.0
    return alpha / width_mult if cfg.scale_output_logits_by_d else alpha / math.sqrt(width_mult)


def rotary_inv_freq(rotary_dim: int, theta: float) -> Tensor:
    # Same expression and dtype (fp32) as HF GPT-J and GPT-NeoX, so the tables agree bit for bit.
    return 1.0 / (theta ** (torch.arange(0, rotary_dim, 2, dtype=torch.int64).float() / rotary_dim))


def _rotate(x: Tensor, cos: Tensor, sin: Tensor, rotary_dim: int, interleaved: bool) -> Tensor:
    head_dim = x.shape[-1]
    if rotary_dim < head_dim:
        x_rot, x_pass = x.split((rotary_dim, head_dim - rotary_dim), dim=-1)
    else:
        x_rot, x_pass = x, None
    if interleaved:
        x1, x2 = x_rot.unflatten(-1, (-1, 2)).unbind(-1)
        rotated = torch.stack((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1).flatten(-2)
    else:
        x1, x2 = x_rot.chunk(2, dim=-1)
        rotated = torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)
    return rotated if x_pass is None else torch.cat((rotated, x_pass), dim=-1)


class _Rotary(torch.autograd.Function):
    """Rotation with a hand-written backward: the gradient of a rotation by theta is the rotation by
    -theta, one fused step instead of autograd's dozen nodes (and no gradient accumulations)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, cos: Tensor, sin: Tensor, rotary_dim: int, interleaved: bool) -> Tensor:
        ctx.save_for_backward(cos, sin)
        ctx.rotary_dim, ctx.interleaved = rotary_dim, interleaved
        return _rotate(x, cos, sin, rotary_dim, interleaved)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        cos, sin = ctx.saved_tensors
        return _rotate(grad, cos, -sin, ctx.rotary_dim, ctx.interleaved), None, None, None, None


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor, rotary_dim: int, interleaved: bool) -> Tensor:
    """Rotate the first `rotary_dim` features of the last axis. cos/sin: [T, rotary_dim/2] broadcastable.

    Pieces are taken with split/chunk rather than slicing (a slice's backward zero-fills a full-size
    gradient). cos/sin never need gradients.
    """
    if x.requires_grad and torch.is_grad_enabled():
        return _Rotary.apply(x, cos, sin, rotary_dim, interleaved)
    return _rotate(x, cos, sin, rotary_dim, interleaved)


@dataclass
class KVCache:
    """Preallocated keys/values per layer, [batch, heads, max_len, head_dim]; see Transformer.new_kv_cache."""

    keys: list[Tensor]
    values: list[Tensor]

    @property
    def max_len(self) -> int:
        return self.keys[0].shape[2]


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.num_heads = cfg.num_heads
        self.head_dim = cfg.head_dim
        self.rotary_dim = cfg.resolved_rotary_dim if cfg.position_embedding_type == "rotary" else 0
        self.interleaved = cfg.rotary_interleaved
        self.scale = attention_scale(cfg)
        self.dropout = cfg.attention_dropout_rate
        h = cfg.hidden_size
        self.qkv = nn.Linear(h, 3 * h, bias=cfg.use_projection_bias_in_attention)
        self.out = nn.Linear(h, h, bias=cfg.use_ffn_bias_in_attention)

    def forward(
        self,
        x: Tensor,
        cos: Tensor | None,
        sin: Tensor | None,
        cache: tuple[Tensor, Tensor] | None = None,
        start_pos: int = 0,
        masking: AttentionMask | None = None,
    ) -> Tensor:
        b, t, h = x.shape
        qkv = self.qkv(x).view(b, t, 3, self.num_heads, self.head_dim)
        qk, v = qkv.split((2, 1), dim=2)
        if self.rotary_dim and cos is not None and sin is not None:
            # q and k rotate together: one set of kernels for both.
            qk = apply_rotary(qk, cos, sin, self.rotary_dim, self.interleaved)
        q, k = qk.unbind(2)
        v = v.squeeze(2)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # [B, heads, T, head_dim]
        mask = None
        is_causal = t > 1
        if cache is not None:
            cache_k, cache_v = cache
            end = start_pos + t
            cache_k[:, :, start_pos:end] = k
            cache_v[:, :, start_pos:end] = v
            k, v = cache_k[:, :, :end], cache_v[:, :, :end]
            if start_pos > 0 and t > 1:
                # Query i sits at absolute position start_pos + i and sees keys up to there.
                q_pos = torch.arange(start_pos, end, device=x.device)[:, None]
                mask = torch.arange(end, device=x.device)[None, :] <= q_pos
                is_causal = False
        if masking is not None:
            out = masking.attend(q, k, v, scale=self.scale, dropout_p=self.dropout if self.training else 0.0)
        else:
            out = F.scaled_dot_product_attention(
                q,
                k,
                v,
                attn_mask=mask,
                dropout_p=self.dropout if self.training else 0.0,
                is_causal=is_causal,
                scale=self.scale,
            )
        return self.out(out.transpose(1, 2).reshape(b, t, h))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.fc_in = nn.Linear(cfg.hidden_size, cfg.filter_size, bias=cfg.use_ffn_bias)
        self.fc_out = nn.Linear(cfg.filter_size, cfg.hidden_size, bias=cfg.use_ffn_bias)
        self.act = activation(cfg.nonlinearity)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc_out(self.act(self.fc_in(x)))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_epsilon)
        self.ln_2 = (
            nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_epsilon) if cfg.use_untied_layer_norm else None
        )
        self.attn = Attention(cfg)
        self.mlp = MLP(cfg)
        self.parallel = cfg.use_parallel_residual
        self.residual_dropout = cfg.residual_dropout_rate

    def _drop(self, x: Tensor) -> Tensor:
        if self.residual_dropout and self.training:
            return F.dropout(x, self.residual_dropout, training=True)
        return x

    def forward(
        self,
        x: Tensor,
        cos: Tensor | None,
        sin: Tensor | None,
        cache: tuple[Tensor, Tensor] | None = None,
        start_pos: int = 0,
        masking: AttentionMask | None = None,
    ) -> Tensor:
        ln_2 = self.ln_2 if self.ln_2 is not None else self.ln_1
        h = self.ln_1(x)
        a = self._drop(self.attn(h, cos, sin, cache, start_pos, masking))
        if self.parallel:
            m = self._drop(self.mlp(h if self.ln_2 is None else ln_2(x)))
            return a + m + x
        y = a + x
        return self._drop(self.mlp(ln_2(y))) + y


class LMHead(nn.Module):
    """Output projection; holds no weight of its own when tied to the input embedding."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.weight = (
            None
            if cfg.share_embedding_weights
            else nn.Parameter(torch.empty(cfg.vocab_size, cfg.hidden_size))
        )
        self.bias = nn.Parameter(torch.empty(cfg.vocab_size)) if cfg.use_bias_in_output else None


class _Embedding(nn.Embedding):
    """nn.Embedding without its default init on the meta device, where it is a no-op anyway: torch's
    meta-device normal_ imports torch._dynamo (seconds at the start of every eval, generate and convert)."""

    def reset_parameters(self) -> None:
        if self.weight.device.type != "meta":
            super().reset_parameters()


class Transformer(nn.Module):
    """GPT-J / GPT-NeoX decoder: `forward(input_ids [B, T]) -> logits [B, T, vocab]`."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        for key, message in cfg.check()[:1]:
            raise ConfigError(f"model.{key}: {message}")
        if cfg.position_embedding_type not in ("rotary", None, "none"):
            raise ConfigError(
                f"model.position_embedding_type: {cfg.position_embedding_type!r} is not supported (rotary only)"
            )
        self.cfg = cfg
        self.embed = _Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.num_hidden_layers))
        self.ln_f = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_epsilon)
        self.lm_head = LMHead(cfg)
        self.embeddings_scale = float(cfg.embeddings_scale)
        self.logits_scale = output_logits_scale(cfg)
        self.rotary_dim: int = (
            cfg.resolved_rotary_dim
            if cfg.position_embedding_type == "rotary" and cfg.num_hidden_layers
            else 0
        )
        self._rope: dict[tuple[torch.device, torch.dtype], tuple[Tensor, Tensor]] = {}
        # Implementation of the document (VSL) mask: "auto" (per device, by measurement) or one of
        # doc_attention.VSL_BACKENDS; `vsl_backend(device)` names the one in use.
        self.vsl_attention = "auto"

    # -- rotary tables -------------------------------------------------------------------------

    def rotary_tables(self, end: int, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """cos, sin of shape [>= end, rotary_dim/2], computed in fp32 once per device/dtype and cached."""
        key = (device, dtype)
        cached = self._rope.get(key)
        if cached is None or cached[0].shape[0] < end:
            n = max(end, self.cfg.max_position_embeddings)
            inv_freq = rotary_inv_freq(self.rotary_dim, self.cfg.rope_theta)
            angles = torch.arange(n, dtype=torch.int64).float()[:, None] * inv_freq
            cached = (angles.cos().to(device, dtype), angles.sin().to(device, dtype))
            self._rope[key] = cached
        return cached

    # -- forward -------------------------------------------------------------------------------

    @property
    def output_weight(self) -> Tensor:
        return self.embed.weight if self.lm_head.weight is None else self.lm_head.weight

    @property
    def blocks_compiled(self) -> bool:
        # optimize.compile_model compiles each block in place (nn.Module.compile).
        return any(getattr(layer, "_compiled_call_impl", None) is not None for layer in self.layers)

    def vsl_backend(self, device: torch.device | str, seq_len: int | None = None) -> str:
        """The document-mask implementation `attention_span` inputs of length `seq_len` use on `device`."""
        from gptx_cli.model.doc_attention import select_backend

        dropout = bool(self.cfg.attention_dropout_rate) and self.training
        grad = torch.is_grad_enabled() and self.training
        return select_backend(
            self.vsl_attention,
            torch.device(device),
            dropout=dropout,
            grad=grad,
            seq_len=seq_len,
            compiled=self.blocks_compiled,
        )

    def hidden_states(
        self,
        input_ids: Tensor,
        *,
        kv_cache: KVCache | None = None,
        start_pos: int = 0,
        position_ids: Tensor | None = None,
        attn_mask: Tensor | None = None,
        attention_span: Tensor | None = None,
    ) -> Tensor:
        """The final-LayerNorm output [B, T, hidden] (what the LM head projects); arguments as `forward`."""
        t = input_ids.shape[1]
        x = self.embed(input_ids)
        if self.embeddings_scale != 1.0:
            x = x * self.embeddings_scale
        if self.cfg.embedding_dropout_rate and self.training:
            x = F.dropout(x, self.cfg.embedding_dropout_rate, training=True)
        cos = sin = None
        if self.rotary_dim:
            # Under autocast q/k come out of the matmul in the autocast dtype: match it, or the rotation
            # would promote them (and the whole attention) back to fp32.
            dtype = x.dtype
            if torch.is_autocast_enabled(x.device.type):
                dtype = torch.get_autocast_dtype(x.device.type)
            cos_all, sin_all = self.rotary_tables(start_pos + t, x.device, dtype)
            if position_ids is None:
                # [T, 1, 1, rot/2]: broadcasts over the stacked (q, k) axis and heads of [B, T, 2, H, D].
                cos = cos_all[start_pos : start_pos + t, None, None, :]
                sin = sin_all[start_pos : start_pos + t, None, None, :]
            else:
                # [B, T, 1, 1, rot/2]: each row's own positions.
                ids = position_ids.to(x.device, torch.long)
                cos = cos_all[ids][:, :, None, None, :]
                sin = sin_all[ids][:, :, None, None, :]
        if attention_span is not None and kv_cache is not None:
            raise ValueError("attention_span does not combine with kv_cache; pass attn_mask instead")
        masking = AttentionMask.build(
            attn_mask=None if attn_mask is None else attn_mask.to(x.device),
            attention_span=attention_span,
            backend=self.vsl_attention,
            device=x.device,
            dropout=bool(self.cfg.attention_dropout_rate) and self.training,
            grad=torch.is_grad_enabled(),
            compiled=attention_span is not None and self.blocks_compiled,
        )
        for i, layer in enumerate(self.layers):
            cache = (kv_cache.keys[i], kv_cache.values[i]) if kv_cache is not None else None
            x = layer(x, cos, sin, cache, start_pos, masking)
        return self.ln_f(x)

    def logits(self, hidden: Tensor) -> Tensor:
        out = F.linear(hidden, self.output_weight, self.lm_head.bias)
        if self.logits_scale is not None:
            out = out * self.logits_scale
        return out

    def forward(
        self,
        input_ids: Tensor,
        *,
        kv_cache: KVCache | None = None,
        start_pos: int = 0,
        hidden_only: bool = False,
        position_ids: Tensor | None = None,
        attn_mask: Tensor | None = None,
        attention_span: Tensor | None = None,
    ) -> Tensor:
        """Logits [B, T, vocab]; `hidden_only=True` returns the final hidden states instead (lm_loss runs
        the head itself in chunks, and calls through `model(...)` so DDP/FSDP wrappers see the forward).

        Optional, for packed (VSL) samples and left-padded batches (none given: plain causal SDPA):
        - `position_ids` [B, T] long: rotary position of each token (default start_pos + arange(T)).
        - `attn_mask`: bool, True = may attend, broadcastable to [B, 1, T, T_kv] (T_kv = start_pos + T
          with a KV cache, else T); it replaces the causal mask, so it must include causality, and every
          query row must see at least one key (`doc_attention.causal_padding_mask` builds one for
          left-padded batches).
        - `attention_span` [B, T]: ModelZoo's VSL row; key k is visible to query q iff
          k <= q <= k + attention_span[k], so tokens attend only within their own document. Its
          implementation is picked per device (`vsl_backend`). Not with a KV cache.
        """
        hidden = self.hidden_states(
            input_ids,
            kv_cache=kv_cache,
            start_pos=start_pos,
            position_ids=position_ids,
            attn_mask=attn_mask,
            attention_span=attention_span,
        )
        return hidden if hidden_only else self.logits(hidden)

    def new_kv_cache(
        self,
        batch_size: int,
        max_len: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> KVCache:
        """An empty cache for incremental decoding of up to `max_len` positions."""
        device = device if device is not None else self.embed.weight.device
        dtype = dtype if dtype is not None else self.embed.weight.dtype
        shape = (batch_size, self.cfg.num_heads, max_len, self.cfg.head_dim)
        n = self.cfg.num_hidden_layers
        return KVCache(
            keys=[torch.zeros(shape, device=device, dtype=dtype) for _ in range(n)],
            values=[torch.zeros(shape, device=device, dtype=dtype) for _ in range(n)],
        )


def parameter_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """gptx parameter name -> shape for a config, from the module built on the meta device."""
    with torch.device("meta"):
        model = Transformer(cfg)
    return {name: tuple(p.shape) for name, p in model.named_parameters()}
