"""Masked attention for the Transformer: document-causal (VSL) packing and padding masks.

Two ways to restrict attention beyond plain causality, both keyword arguments of `Transformer.forward`:

- `attention_span` [B, T] (ModelZoo's VSL row): key `k` is visible to query `q` when
  `k <= q <= k + attention_span[k]`, which is `create_vsl_mask(..., is_causal=True)` in ModelZoo's
  `common/utils/model/transformer_utils.py`. In VSL data the span counts down to 0 at each document's
  last token, so a token sees exactly the earlier tokens of its own document; padding (span 0) sees
  only itself.
- `attn_mask`: a general boolean mask (True = may attend) broadcastable to [B, 1, T, T_kv]; the caller
  includes causality. `causal_padding_mask` builds it for left-padded batches with a KV cache.

The document mask has three implementations (`VSL_BACKENDS`); `select_backend` picks one per device
and sequence length from the measurements recorded in docs/benchmarks.md (benchmarks/bench_vsl.py),
and `Transformer.vsl_attention` overrides it ("auto" by default):

- `sdpa_mask`: `F.scaled_dot_product_attention` with a [B, 1, T, T] boolean block-diagonal causal mask;
- `flex`: FlexAttention with a document-causal BlockMask (skips whole blocks across documents);
- `varlen`: SDPA with `is_causal` on each document slice separately (no mask, no wasted blocks, one
  call per document).

Every implementation gives each query row at least one visible key (itself), so no softmax row is
empty and no NaN can reach the residual stream.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

VSL_BACKENDS = ("sdpa_mask", "flex", "varlen")

# What "auto" picks, by measurement (docs/benchmarks.md, benchmarks/bench_vsl.py). On CPU, SDPA with a
# mask computes every query-key pair (twice what is_causal does), while varlen computes only pairs
# within documents: varlen wins from about 512 tokens on (0.99x vs 0.76x plain packing's training
# tokens/s at 1024), the mask below. Compiled blocks take sdpa_mask (varlen's per-document slices
# would recompile for every layout). CUDA has not been measured yet: it takes the exact SDPA mask path
# (memory-efficient kernel) until a GPU run says otherwise.
CPU_VARLEN_FROM = 512


def select_backend(
    requested: str,
    device: torch.device,
    *,
    dropout: bool = False,
    grad: bool = False,
    seq_len: int | None = None,
    compiled: bool = False,
) -> str:
    """The document-mask implementation to use: `requested` unless it is "auto". FlexAttention has no
    attention dropout and no backward on CPU; there the same mask runs through `sdpa_mask`."""
    if requested == "auto":
        long = seq_len is None or seq_len >= CPU_VARLEN_FROM
        requested = "varlen" if device.type == "cpu" and long and not compiled else "sdpa_mask"
    if requested not in VSL_BACKENDS:
        raise ValueError(f"vsl attention backend {requested!r}: one of auto, {', '.join(VSL_BACKENDS)}")
    if requested == "flex" and (dropout or (grad and device.type == "cpu")):
        return "sdpa_mask"
    return requested


def document_causal_mask(attention_span: Tensor) -> Tensor:
    """ModelZoo's causal VSL mask as booleans [B, 1, T, T]: True where `k <= q <= k + span[k]`."""
    t = attention_span.shape[-1]
    pos = torch.arange(t, device=attention_span.device)
    diff = pos[:, None] - pos[None, :]  # q - k
    return (diff >= 0) & (diff <= attention_span[:, None, None, :].to(diff.dtype))


def causal_padding_mask(key_valid: Tensor, query_len: int, start_pos: int = 0) -> Tensor:
    """Causal mask over keys with padding, for left-padded batches (with or without a KV cache).

    key_valid: [B, T_kv] (bool or 0/1), True for real tokens, T_kv = start_pos + query_len. Query `i`
    sits at absolute position `start_pos + i` and sees valid keys up to there, and always itself (a
    padding query then attends only to itself, so its row is never empty). Returns [B, 1, query_len, T_kv].
    """
    t_kv = key_valid.shape[-1]
    q_pos = torch.arange(start_pos, start_pos + query_len, device=key_valid.device)[:, None]
    k_pos = torch.arange(t_kv, device=key_valid.device)[None, :]
    mask = (k_pos <= q_pos) & key_valid.bool()[:, None, None, :]
    return mask | (k_pos == q_pos)


def _segments(attention_span: Tensor) -> list[list[tuple[int, int, bool]]]:
    """Per row, [start, end) slices that end where the span reaches 0 (one host sync), as
    (start, end, singles): `singles` marks a run of one-token documents (padding), each of which
    attends only to itself, so its output is its own value row."""
    ends = (attention_span == 0).cpu()
    out = []
    for row in ends:
        stops = (torch.nonzero(row).flatten() + 1).tolist()
        if not stops or stops[-1] != row.numel():
            stops.append(row.numel())
        segs: list[tuple[int, int, bool]] = []
        start = 0
        for stop in stops:
            single = stop - start == 1
            if single and segs and segs[-1][2]:
                segs[-1] = (segs[-1][0], stop, True)
            else:
                segs.append((start, stop, single))
            start = stop
        out.append(segs)
    return out


@dataclass
class AttentionMask:
    """What every layer of one forward needs to mask attention; built once per forward."""

    backend: str  # "mask" (a boolean tensor), or one of VSL_BACKENDS
    mask: Tensor | None = None  # bool [B, 1, T, T_kv] for "mask" and "sdpa_mask"
    block_mask: Any = None  # FlexAttention BlockMask for "flex"
    segments: list[list[tuple[int, int, bool]]] | None = None  # per row for "varlen"

    @classmethod
    def build(
        cls,
        *,
        attn_mask: Tensor | None,
        attention_span: Tensor | None,
        backend: str,
        device: torch.device,
        dropout: bool,
        grad: bool = False,
        compiled: bool = False,
    ) -> AttentionMask | None:
        if attention_span is None:
            if attn_mask is None:
                return None
            if attn_mask.dtype != torch.bool:
                raise ValueError(f"attn_mask must be boolean (True = attend), got {attn_mask.dtype}")
            return cls("mask", mask=attn_mask)
        span = attention_span.to(device)
        if attn_mask is not None:  # both: intersect them, on the general path
            return cls("mask", mask=document_causal_mask(span) & attn_mask)
        chosen = select_backend(
            backend, device, dropout=dropout, grad=grad, seq_len=span.shape[-1], compiled=compiled
        )
        if chosen == "flex":
            return cls(chosen, block_mask=_flex_block_mask(span))
        if chosen == "varlen":
            return cls(chosen, segments=_segments(span))
        return cls(chosen, mask=document_causal_mask(span))

    def attend(self, q: Tensor, k: Tensor, v: Tensor, *, scale: float, dropout_p: float) -> Tensor:
        """Attention of q [B, H, T, D] over k, v [B, H, T_kv, D] under this mask."""
        if self.backend == "flex":
            from torch.nn.attention.flex_attention import flex_attention

            return flex_attention(q, k, v, block_mask=self.block_mask, scale=scale)  # type: ignore[return-value]
        if self.backend == "varlen":
            assert self.segments is not None
            rows = []
            for b, segs in enumerate(self.segments):
                parts = [
                    v[b : b + 1, :, s:e]
                    if singles and not dropout_p
                    else F.scaled_dot_product_attention(
                        q[b : b + 1, :, s:e],
                        k[b : b + 1, :, s:e],
                        v[b : b + 1, :, s:e],
                        dropout_p=dropout_p,
                        is_causal=not singles,
                        scale=scale,
                        attn_mask=None
                        if not singles
                        else torch.eye(e - s, dtype=torch.bool, device=q.device),
                    )
                    for s, e, singles in segs
                ]
                rows.append(torch.cat(parts, dim=2) if len(parts) > 1 else parts[0])
            return torch.cat(rows, dim=0)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=self.mask, dropout_p=dropout_p, scale=scale)


def _flex_block_mask(span: Tensor) -> Any:
    from torch.nn.attention.flex_attention import create_block_mask

    b, t = span.shape

    def document_causal(batch: Tensor, _head: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
        return (kv_idx <= q_idx) & (q_idx <= kv_idx + span[batch, kv_idx])

    return create_block_mask(document_causal, b, None, t, t, device=span.device)
