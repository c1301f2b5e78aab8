"""Language-model loss with ModelZoo's GPTLMHeadModelLoss semantics, shared by training and eval.

Labels are already aligned with the inputs (the data loader shifts them: `labels[t]` is the target of
position `t`), and `loss_mask` selects the tokens that count. With `loss_scaling: num_tokens` the loss
is the masked cross-entropy sum over the number of masked tokens (ModelZoo requires loss_weight == 1
there); with `batch_size` it is the sum over the batch size times `loss_weight`.

The LM head and the cross-entropy run fused, in chunks of rows, so [B, T, vocab] fp32 logits never
exist at once (they would be 1.6 GB for a batch of 4 x 2048 GPT-J tokens). With gradients on, each
chunk's gradient (softmax - one-hot) is turned into the hidden-state and head-weight gradients right
away, in the forward pass, and the chunk's logits are dropped: the head costs the same three matmuls as
the unchunked version (no recomputation) and backward only scales the stored gradients by the
incoming one. Values are those of `F.cross_entropy` on the full logits: the same log-softmax per row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor

from gptx_cli.errors import ConfigError

if TYPE_CHECKING:
    from gptx_cli.model.transformer import Transformer

# At most this many logits per chunk (fp32: 4 bytes each; a chunk also holds their log-softmax and
# gradient). Large enough that each chunk's matmuls fill a GPU, small next to the model's own memory.
CHUNK_LOGITS = 1 << 26


@dataclass
class LossOutput:
    loss: Tensor  # the scalar to backprop
    loss_sum: Tensor  # detached fp32 sum of token cross-entropies over the mask
    num_tokens: Tensor  # number of masked tokens (int64)
    num_correct: Tensor  # masked tokens whose argmax equals the label (int64)


def _compute_dtype(hidden: Tensor) -> torch.dtype:
    """The dtype the head's matmuls run in: autocast's when it is on (as F.linear would), else hidden's."""
    if torch.is_autocast_enabled(hidden.device.type):
        return torch.get_autocast_dtype(hidden.device.type)
    return hidden.dtype


def _head_chunks(
    hidden: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    labels: Tensor,
    mask: Tensor,
    scale: float | None,
    chunk_rows: int,
    dtype: torch.dtype,
    with_grad: bool,
) -> tuple[Tensor, Tensor, tuple[Tensor, Tensor, Tensor | None] | None]:
    """Masked CE sum (fp32), correct-prediction count and, with_grad, the CE sum's gradients with
    respect to (hidden [in `dtype`], weight [fp32], bias [fp32]). hidden [N, H]; weight [V, H];
    labels [N] int64; mask [N] fp32. The matmuls run in `dtype` with autocast off."""
    with torch.autocast(hidden.device.type, enabled=False):
        hidden, weight = hidden.to(dtype), weight.to(dtype)
        bias = None if bias is None else bias.to(dtype)
        ce_sum = torch.zeros((), dtype=torch.float32, device=hidden.device)
        correct = torch.zeros((), dtype=torch.int64, device=hidden.device)
        grads = None
        if with_grad:
            grad_hidden = torch.empty_like(hidden)
            grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
            grad_bias = (
                None if bias is None else torch.zeros(bias.shape, dtype=torch.float32, device=bias.device)
            )
            grads = (grad_hidden, grad_weight, grad_bias)
        for start in range(0, hidden.shape[0], chunk_rows):
            rows = slice(start, start + chunk_rows)
            h, y, m = hidden[rows], labels[rows], mask[rows]
            logits = F.linear(h, weight, bias)
            if scale is not None:
                logits = logits * scale
            logits = logits.float()
            # "label is the argmax" as "label's logit equals the max": amax is ~10x cheaper than argmax on
            # CPU; the two differ only on exact ties, where argmax picks the lowest id.
            label_logit = logits.gather(1, y[:, None]).squeeze(1)
            correct += ((label_logit >= logits.amax(1)) & (m > 0)).sum()
            # What F.cross_entropy computes, so the values are its own; in place, since the logits are not
            # needed again: one [chunk, vocab] tensor fewer to allocate (and page-fault in on the CPU).
            log_probs = torch.log_softmax(logits, 1, out=logits)
            del logits
            ce_sum += (-log_probs.gather(1, y[:, None]).squeeze(1) * m).sum()
            if grads is None:
                continue
            # d(sum m * CE)/d logits = m * (softmax - one_hot), times the muP scale for the pre-scale logits.
            grad_logits = log_probs.exp_()
            grad_logits[torch.arange(len(y), device=y.device), y] -= 1.0
            grad_logits *= m[:, None] if scale is None else m[:, None] * scale
            if grads[2] is not None:
                grads[2].add_(grad_logits.sum(0))
            grad_logits = grad_logits.to(weight.dtype)
            torch.mm(grad_logits, weight, out=grads[0][rows])
            if weight.dtype == torch.float32:
                grads[1].addmm_(grad_logits.t(), h)
            else:
                grads[1].add_(grad_logits.t() @ h)
            del log_probs, grad_logits
        return ce_sum, correct, grads


def head_log_probs(
    hidden: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    scale: float | None,
    targets: Tensor,
    buffer: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """log p(target) [N] (fp32, no gradients) of the LM head (weight [V, H], bias, muP scale) on
    hidden [N, H], and the fp32 buffer that held the logits, for the next call to reuse.

    The head's matmul writes the [N, V] logits into `buffer` (when it has at least N * V elements) and
    log_softmax overwrites them in place, so a batch allocates no [N, V] tensor: on the CPU a fresh one
    costs a page fault per 4 KiB (more than the log_softmax itself), and a second one would double the
    memory traffic. The values are F.log_softmax's, bit for bit."""
    n, v = hidden.shape[0], weight.shape[0]
    with torch.no_grad(), torch.autocast(hidden.device.type, enabled=False):
        if buffer is None or buffer.numel() < n * v or buffer.device != hidden.device:
            buffer = torch.empty(n * v, dtype=torch.float32, device=hidden.device)
        logits = buffer[: n * v].view(n, v)
        weight = weight.to(hidden.dtype)
        bias = None if bias is None else bias.to(hidden.dtype)
        if hidden.dtype != torch.float32:
            logits.copy_(F.linear(hidden, weight, bias))
        elif bias is None:
            torch.mm(hidden, weight.t(), out=logits)
        else:
            torch.addmm(bias, hidden, weight.t(), out=logits)
        if scale is not None:
            logits.mul_(scale)
        torch.log_softmax(logits, 1, out=logits)
        return logits.gather(1, targets[:, None]).squeeze(1), buffer


class _FusedLinearCrossEntropy(torch.autograd.Function):
    """LM head + masked CE sum whose backward only scales the gradients computed in forward."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        hidden: Tensor,
        weight: Tensor,
        bias: Tensor | None,
        labels: Tensor,
        mask: Tensor,
        scale: float | None,
        chunk_rows: int,
        compute_dtype: torch.dtype,
    ) -> tuple[Tensor, Tensor]:
        ce_sum, correct, grads = _head_chunks(
            hidden, weight, bias, labels, mask, scale, chunk_rows, compute_dtype, with_grad=True
        )
        assert grads is not None
        grad_hidden, grad_weight, grad_bias = grads
        ctx.dtypes = (hidden.dtype, weight.dtype, None if bias is None else bias.dtype)
        ctx.save_for_backward(grad_hidden, grad_weight, grad_bias)
        ctx.mark_non_differentiable(correct)
        return ce_sum, correct

    @staticmethod
    def backward(ctx: Any, grad_ce: Tensor, _grad_correct: Tensor | None) -> tuple[Tensor | None, ...]:
        grad_hidden, grad_weight, grad_bias = ctx.saved_tensors
        hidden_dtype, weight_dtype, bias_dtype = ctx.dtypes
        g = grad_ce.float()
        return (
            (grad_hidden * g).to(hidden_dtype) if ctx.needs_input_grad[0] else None,
            (grad_weight * g).to(weight_dtype) if ctx.needs_input_grad[1] else None,
            (grad_bias * g).to(bias_dtype) if grad_bias is not None and ctx.needs_input_grad[2] else None,
            None,
            None,
            None,
            None,
            None,
        )


def unwrap(model: Any) -> Any:
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
    **model_inputs: Tensor,
) -> LossOutput:
    """Run `model` (a Transformer, or a wrapper exposing hidden_states/logits) and compute the loss.

    `model_inputs` (e.g. a VSL batch's `position_ids` and `attention_span`) go to the model's forward
    as keyword arguments."""
    if loss_scaling not in ("num_tokens", "batch_size"):
        raise ConfigError(f"model.loss_scaling: {loss_scaling!r} should be 'num_tokens' or 'batch_size'")
    if loss_scaling == "num_tokens" and loss_weight != 1.0:
        raise ConfigError(
            "model.loss_weight: loss_scaling 'num_tokens' requires loss_weight 1.0 (as in ModelZoo)"
        )
    hidden = model(input_ids, hidden_only=True, **model_inputs)
    inner = cast("Transformer", unwrap(model))
    b, t, h = hidden.shape
    weight, bias, scale = inner.output_weight, inner.lm_head.bias, inner.logits_scale
    chunk_rows = max(1, chunk_logits // weight.shape[0])
    flat = (hidden.reshape(b * t, h), labels.reshape(-1), loss_mask.reshape(-1).to(torch.float32))
    dtype = _compute_dtype(hidden)
    needs_grad = torch.is_grad_enabled() and (
        hidden.requires_grad or weight.requires_grad or (bias is not None and bias.requires_grad)
    )
    if needs_grad:
        ce_sum, correct = _FusedLinearCrossEntropy.apply(
            flat[0], weight, bias, flat[1], flat[2], scale, chunk_rows, dtype
        )
    else:
        ce_sum, correct, _ = _head_chunks(
            flat[0], weight, bias, flat[1], flat[2], scale, chunk_rows, dtype, with_grad=False
        )
    num_tokens = loss_mask.sum().to(torch.int64)
    if loss_scaling == "num_tokens":
        loss = ce_sum / loss_mask.sum().to(ce_sum.dtype)
    else:
        loss = ce_sum / b * loss_weight
    return LossOutput(
        loss=loss, loss_sum=ce_sum.detach(), num_tokens=num_tokens, num_correct=correct.detach()
    )
