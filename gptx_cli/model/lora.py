"""LoRA adapters (ModelZoo's `Lora` callback, ported from its `common/utils/model/lora.py`).

A targeted `nn.Linear` / `nn.Embedding` keeps its frozen weight under its own name and gains two
trainable parameters, `<module>.lora_A` [r, in] and `<module>.lora_B` [out, r] (the module's class is
switched to `LoraLinear` / `LoraEmbedding`, so the base weight names stay those of a plain gptx
checkpoint). Forward: `base(x) + dropout(x) @ A^T @ B^T * alpha / r`; A is Kaiming-uniform (seeded
per parameter name) and B zero, so a fresh adapter leaves the model unchanged. gptx fuses q, k and v
into one matmul; its adapter is three ModelZoo adapters stacked (`lora_A` [3r, in], `lora_B` [3h, r],
block-diagonal), so a ModelZoo config trains the same number of parameters with the same rank per
projection. The untied LM head's adapter acts through `Transformer.output_weight` (the chunked loss
reads it), which then returns `W + B @ A * scaling`; the chunked loss takes the adapter's gradients
through A and B, never building the [vocab, hidden] gradient of that sum (`gptx_cli.model.loss`).

Everything but the adapters has `requires_grad = False` (ModelZoo freezes all non-LoRA parameters),
so the optimizer holds no state for the base. `merge_weights: true` folds the adapters into the
weights the layer computes with in eval mode (ModelZoo folds them in place on `eval()` and unfolds on
`train()`; gptx computes the folded weight without touching the base, so the base stays bit-exact).

Checkpoints (read by `gptx_cli.checkpoint`, written through `gptx_cli.train.lora.LoraRun`): a LoRA run's
checkpoint holds only the adapters and names its base in gptx.json (`lora.base`: the checkpoint or
Hugging Face directory it started from, with the base's weight checksums when it is a gptx checkpoint,
or the seed of a fresh initialisation); with `--lora-save-base` it holds the base weights as well
(`lora.adapters_only: false`) and is read without its base.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gptx_cli.config.lora import LoraParams, adapter_shapes, plan
from gptx_cli.config.spec import ModelConfig
from gptx_cli.errors import CheckpointError

ADAPTER_SUFFIXES = (".lora_A", ".lora_B")


def is_adapter(name: str) -> bool:
    return name.endswith(ADAPTER_SUFFIXES)


class _LoraMixin:
    lora_A: nn.Parameter
    lora_B: nn.Parameter
    lora_scaling: float
    lora_dropout_p: float
    lora_splits: int
    merge_weights: bool

    def lora_delta_weight(self) -> Tensor:
        """B @ A * scaling, [out, in] (block-diagonal over q, k, v for the fused projection)."""
        s = self.lora_splits
        if s == 1:
            return (self.lora_B @ self.lora_A) * self.lora_scaling
        a = self.lora_A.view(s, -1, self.lora_A.shape[1])
        b = self.lora_B.view(s, -1, self.lora_B.shape[1])
        return torch.cat([b[i] @ a[i] for i in range(s)], dim=0) * self.lora_scaling


class LoraLinear(nn.Linear, _LoraMixin):
    def forward(self, x: Tensor) -> Tensor:
        if self.merge_weights and not self.training:
            return F.linear(x, self.weight + self.lora_delta_weight().to(self.weight.dtype), self.bias)
        out = F.linear(x, self.weight, self.bias)
        if self.lora_dropout_p and self.training:
            x = F.dropout(x, self.lora_dropout_p, training=True)
        xa = x @ self.lora_A.transpose(0, 1).to(x.dtype)
        s = self.lora_splits
        if s == 1:
            delta = xa @ self.lora_B.transpose(0, 1).to(x.dtype)
        else:
            b = self.lora_B.view(s, -1, self.lora_B.shape[1]).to(x.dtype)  # [s, out/s, r]
            xa = xa.unflatten(-1, (s, -1))  # [..., s, r]
            delta = torch.einsum("...sr,sor->...so", xa, b).flatten(-2)
        return out + delta * self.lora_scaling


class LoraEmbedding(nn.Embedding, _LoraMixin):
    def forward(self, x: Tensor) -> Tensor:
        if self.merge_weights and not self.training:
            return F.embedding(
                x, self.weight + self.lora_delta_weight().transpose(0, 1).to(self.weight.dtype)
            )
        out = F.embedding(x, self.weight)
        after_a = F.embedding(x, self.lora_A.transpose(0, 1))
        return out + (after_a @ self.lora_B.transpose(0, 1)).to(out.dtype) * self.lora_scaling


class LoraHead(nn.Module, _LoraMixin):
    """Adapter state of the untied LM head (the head is a weight the loss reads, not an nn.Linear)."""


def _lora_output_weight(self: Any) -> Tensor:
    w = self.lm_head.weight
    head = self.lm_head
    if isinstance(head, LoraHead):
        return w + head.lora_delta_weight().to(w.dtype)
    return w


def _attach(module: nn.Module, name: str, cfg: ModelConfig, g: LoraParams, device: Any) -> None:
    a_shape, b_shape = adapter_shapes(name, cfg, g.r)
    dtype: Any = module.weight.dtype if getattr(module, "weight", None) is not None else torch.float32
    module.lora_A = nn.Parameter(torch.zeros(a_shape, device=device, dtype=dtype))
    module.lora_B = nn.Parameter(torch.zeros(b_shape, device=device, dtype=dtype))
    object.__setattr__(module, "lora_scaling", g.scaling)  # plain attributes, not module state
    object.__setattr__(module, "lora_dropout_p", float(g.dropout))
    object.__setattr__(module, "lora_splits", 3 if name.endswith(".qkv") else 1)
    object.__setattr__(module, "merge_weights", bool(g.merge_weights))


def apply_lora(model: nn.Module, groups: list[LoraParams], seed: int = 0) -> list[str]:
    """Add adapters to the targeted modules of a gptx Transformer (in place), freeze everything else,
    and initialise the adapters (A: seeded Kaiming-uniform, B: 0; on the meta device: later, with
    `init_adapters`). Returns the adapted module names."""
    cfg: ModelConfig = model.cfg  # type: ignore[assignment]
    targets = plan(cfg, groups)
    for p in model.parameters():
        p.requires_grad_(False)
    for name, g in targets.items():
        module = model.get_submodule(name)
        device = module.weight.device if getattr(module, "weight", None) is not None else None
        if name == "lm_head":
            module.__class__ = type("LoraLMHead", (type(module), LoraHead), {})
            model.__class__ = type(
                f"Lora{type(model).__name__}",
                (type(model),),
                {"output_weight": property(_lora_output_weight)},
            )
        elif isinstance(module, nn.Embedding):
            module.__class__ = LoraEmbedding
        else:
            module.__class__ = LoraLinear
        _attach(module, name, cfg, g, device)
    if not any(p.is_meta for p in model.parameters()):
        init_adapters(model, seed)
    return list(targets)


def _generator(seed: int, name: str) -> torch.Generator:
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))


def initial_adapter(name: str, shape: tuple[int, ...], seed: int) -> Tensor:
    """The initial value of one adapter parameter (on the CPU, fp32): ModelZoo's reset_parameters."""
    t = torch.zeros(shape)
    module = name.rsplit(".", 1)[0]
    if name.endswith(".lora_A") and module != "embed":
        nn.init.kaiming_uniform_(t, a=math.sqrt(5), generator=_generator(seed, name))
    elif name.endswith(".lora_B") and module == "embed":
        nn.init.normal_(t, generator=_generator(seed, name))  # LoRA_Embedding: A zero, B normal
    return t


def init_adapters(model: nn.Module, seed: int, copy: Any = None) -> None:
    """Initialise every adapter; `copy(param, full)` writes a full value (FSDP2: into the local shard)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if is_adapter(name):
                full = initial_adapter(name, tuple(p.shape), seed).to(p.device if not p.is_meta else "cpu")
                if copy is not None:
                    copy(p, full.to(p.dtype))
                else:
                    p.copy_(full)


def set_trainable(model: nn.Module) -> None:
    """Only the adapters train (after a wrapper or .to() created new parameter objects)."""
    for name, p in model.named_parameters():
        p.requires_grad_(is_adapter(name))


def trainable_count(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())


# ------------------------------------------------------------------------------------------ merging


def merged_tensors(
    cfg: ModelConfig,
    groups: list[LoraParams],
    base: Iterator[tuple[str, Tensor]],
    adapters: dict[str, Tensor],
) -> Iterator[tuple[str, Tensor]]:
    """Base tensors with the adapters folded in, one at a time: W + B @ A * alpha / r (fp32 math)."""
    targets = plan(cfg, groups)
    for name, t in base:
        module = name.rsplit(".", 1)[0]
        g = targets.get(module)
        if g is None or not name.endswith(".weight"):
            yield name, t
            continue
        try:
            a, b = adapters[f"{module}.lora_A"].float(), adapters[f"{module}.lora_B"].float()
        except KeyError:
            raise CheckpointError(
                f"adapter {module}.lora_A / lora_B missing from the LoRA checkpoint"
            ) from None
        holder = LoraHead()
        holder.lora_A, holder.lora_B = nn.Parameter(a, False), nn.Parameter(b, False)
        holder.lora_scaling, holder.lora_splits = g.scaling, 3 if module.endswith(".qkv") else 1
        delta = holder.lora_delta_weight().detach()
        if module == "embed":
            delta = delta.transpose(0, 1)
        yield name, (t.float() + delta).to(t.dtype)


# ------------------------------------------------------------------------------------- checkpoints


def lora_meta(groups: list[LoraParams], base: dict[str, Any], adapters_only: bool) -> dict[str, Any]:
    """What a LoRA checkpoint's gptx.json holds under "lora"."""
    return {"params": [g.to_dict() for g in groups], "base": base, "adapters_only": adapters_only}
