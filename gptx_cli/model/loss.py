"""Language-model loss with ModelZoo's GPTLMHeadModelLoss semantics, shared by training and eval.

Labels are already aligned with the inputs (the data loader shifts them: `labels[t]` is the target of
position `t`), and `loss_mask` selects the tokens that count. With `loss_scaling: num_tokens` the loss
is the masked cross-entropy sum over the number of masked tokens (ModelZoo requires loss_weight == 1
there); with `batch_size` it is the sum over the batch size times `loss_weight`.

The LM head and the cross-entropy run in sequence chunks when the fp32 logits would be large, each
chunk under activation checkpointing, so [B, T, vocab] fp32 logits never exist at once (they would be
0.8 GB for a batch of 8 x 2048 GPT-J tokens). Small batches take the single-pass path.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from gptx_cli.errors import ConfigError

# Above this many logits per step (fp32: 4 bytes each) the head runs in checkpointed chunks.
CHUNK_LOGITS = 1 << 24


@dataclass
class LossOutput:
    loss: Tensor  # the scalar to backprop
    loss_sum: Tensor  # detached fp32 sum of token cross-entropies over the mask
    num_tokens: Tensor  # number of masked tokens (int64)
    num_correct: Tensor  # masked tokens whose argmax equals the label (int64)


def _chunk_stats(
    model: torch.nn.Module, hidden: Tensor, labels: Tensor, mask: Tensor
) -> tuple[Tensor, Tensor]:
    """(masked CE sum fp32, number of correct argmax predictions) for one chunk of positions."""
    logits = model.logits(hidden).float()  # type: ignore[operator]
    ce = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="none")
    ce_sum = (ce * mask.flatten().to(ce.dtype)).sum()
    with torch.no_grad():
        # "label is the argmax" as "label's logit equals the max": amax is ~10x cheaper than argmax on
        # CPU; the two differ only on exact ties, where argmax picks the lowest id.
        label_logit = logits.gather(-1, labels.unsqueeze(-1)).squeeze(-1)
        correct = ((label_logit >= logits.amax(-1)) & mask.bool()).sum()
    return ce_sum, correct


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The Transformer inside torch.compile / DDP wrappers."""
    while hasattr(model, "_orig_mod") or hasattr(model, "module"):
        model = getattr(model, "_orig_mod", None) or model.module  # type: ignore[assignment]
    return model


def lm_loss(
    model: torch.nn.Module,
    input_ids: Tensor,
    labels: Tensor,
    loss_mask: Tensor,
    *,
    loss_scaling: str = "num_tokens",
    loss_weight: float = 1.0,
    chunk_logits: int = CHUNK_LOGITS,
) -> LossOutput:
    """Run `model` (a Transformer, or a wrapper exposing hidden_states/logits) and compute the loss."""
    if loss_scaling not in ("num_tokens", "batch_size"):
        raise ConfigError(f"model.loss_scaling: {loss_scaling!r} should be 'num_tokens' or 'batch_size'")
    if loss_scaling == "num_tokens" and loss_weight != 1.0:
        raise ConfigError(
            "model.loss_weight: loss_scaling 'num_tokens' requires loss_weight 1.0 (as in ModelZoo)"
        )
    hidden = model(input_ids, hidden_only=True)
    inner = unwrap(model)
    b, t, _ = hidden.shape
    vocab = int(inner.cfg.vocab_size)  # type: ignore[union-attr,arg-type]
    if b * t * vocab <= chunk_logits:
        ce_sum, correct = _chunk_stats(inner, hidden, labels, loss_mask)
    else:
        step = max(1, chunk_logits // (b * vocab))
        ce_sum = hidden.new_zeros((), dtype=torch.float32)
        correct = torch.zeros((), dtype=torch.int64, device=hidden.device)
        for s in range(0, t, step):
            part_sum, part_correct = checkpoint(
                _chunk_stats,
                inner,
                hidden[:, s : s + step],
                labels[:, s : s + step],
                loss_mask[:, s : s + step],
                use_reentrant=False,
            )
            ce_sum = ce_sum + part_sum
            correct = correct + part_correct
    num_tokens = loss_mask.sum().to(torch.int64)
    if loss_scaling == "num_tokens":
        loss = ce_sum / loss_mask.sum().to(ce_sum.dtype)
    else:
        loss = ce_sum / b * loss_weight
    return LossOutput(
        loss=loss, loss_sum=ce_sum.detach(), num_tokens=num_tokens, num_correct=correct.detach()
    )
