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

Only the gradients something needs are built: a frozen head weight (LoRA without a head adapter, a
frozen tied embedding) gets no [vocab, hidden] gradient, a frozen body no hidden-state gradient. A LoRA
head (its weight W + B @ A * s) gets its adapter gradients from each chunk's logit gradient through
the rank-r factors, again without the [vocab, hidden] gradient of the merged weight.
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


class LogitsWorkspace:
    """The fp32 buffer a model's LM-head logits are written into, reused by every loss computation of
    that model (`lm_loss` keeps one on the Transformer): no [chunk, vocab] tensor is allocated per step."""

    def __init__(self) -> None:
        self.buffer: Tensor | None = None


def _compute_dtype(hidden: Tensor) -> torch.dtype:
    """The dtype the head's matmuls run in: autocast's when it is on (as F.linear would), else hidden's."""
    if torch.is_autocast_enabled(hidden.device.type):
        return torch.get_autocast_dtype(hidden.device.type)
    return hidden.dtype


def _accumulate(acc: Tensor, a: Tensor, b: Tensor) -> None:
    """acc (fp32) += a @ b; in one addmm in fp32, else the product in a's dtype, then added."""
    if a.dtype == torch.float32:
        acc.addmm_(a, b)
    else:
        acc.add_(a @ b)


def _head_chunks(
    hidden: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    labels: Tensor,
    mask: Tensor,
    scale: float | None,
    chunk_rows: int,
    dtype: torch.dtype,
    needs: tuple[bool, ...] | None = None,
    adapter: tuple[Tensor, Tensor] | None = None,
    workspace: LogitsWorkspace | None = None,
) -> tuple[Tensor, Tensor, tuple[Tensor | None, ...] | None]:
    """Masked CE sum (fp32), correct-prediction count and, when `needs` is given, the CE sum's gradients
    with respect to (hidden [in `dtype`], weight, bias, lora_A, lora_B) [fp32], each only where `needs`
    (five flags in that order) asks for it, else None: a frozen head weight costs no [V, H] gradient.
    hidden [N, H]; weight [V, H]; labels [N] int64; mask [N] fp32. The matmuls run in `dtype` with
    autocast off.

    `adapter` (lora_A [r, H], lora_B [V, r]): the head is a LoRA head and `weight` its merged weight
    W + B @ A * s (detached). The adapter gradients come without the merged weight's [V, H] gradient G
    (whose `B^T G s` and `G A^T s` they would be): sum over chunks of (g B)^T h and g^T (h A^T), g the
    chunk's logit gradient, left for the caller to multiply by s. `workspace` holds the buffer the
    chunks' logits are written into, kept for the next call (`logits_into`)."""
    with torch.autocast(hidden.device.type, enabled=False):
        hidden, weight = hidden.to(dtype), weight.to(dtype)
        bias = None if bias is None else bias.to(dtype)
        lora_a: Tensor | None = None
        lora_b: Tensor | None = None
        if adapter is not None:
            lora_a, lora_b = adapter[0].to(dtype), adapter[1].to(dtype)
        ce_sum = torch.zeros((), dtype=torch.float32, device=hidden.device)
        correct = torch.zeros((), dtype=torch.int64, device=hidden.device)
        grads: list[Tensor | None] | None = None
        if needs is not None:

            def zeros(t: Tensor | None, need: bool) -> Tensor | None:
                return (
                    None
                    if t is None or not need
                    else torch.zeros(t.shape, dtype=torch.float32, device=t.device)
                )

            grads = [
                torch.empty_like(hidden) if needs[0] else None,
                zeros(weight, needs[1]),
                zeros(bias, needs[2]),
                zeros(lora_a, needs[3]),
                zeros(lora_b, needs[4]),
            ]
        buffer = None if workspace is None else workspace.buffer
        for start in range(0, hidden.shape[0], chunk_rows):
            rows = slice(start, start + chunk_rows)
            h, y, m = hidden[rows], labels[rows], mask[rows]
            logits, buffer = logits_into(buffer, h, weight, bias, scale)
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
            if grads[0] is not None:
                torch.mm(grad_logits, weight, out=grads[0][rows])
            if grads[1] is not None:
                _accumulate(grads[1], grad_logits.t(), h)
            if grads[3] is not None and lora_b is not None:
                _accumulate(grads[3], (grad_logits @ lora_b).t(), h)
            if grads[4] is not None and lora_a is not None:
                _accumulate(grads[4], grad_logits.t(), h @ lora_a.t())
            del log_probs, grad_logits
        if workspace is not None:
            workspace.buffer = buffer
        return ce_sum, correct, None if grads is None else tuple(grads)


def logits_into(
    buffer: Tensor | None, hidden: Tensor, weight: Tensor, bias: Tensor | None, scale: float | None
) -> tuple[Tensor, Tensor]:
    """The LM head's fp32 logits [N, V] of hidden [N, H] (weight [V, H], bias, muP scale), and the buffer
    to pass next time. In fp32 the matmul writes into `buffer` (grown when it holds fewer than N * V
    elements), so repeated calls allocate no [N, V] tensor: on the CPU a fresh one costs a page fault per
    4 KiB, about a third of the head's matmul. In other dtypes the logits are F.linear's, copied into the buffer."""
    n, v = hidden.shape[0], weight.shape[0]
    if buffer is None or buffer.numel() < n * v or buffer.device != hidden.device:
        buffer = torch.empty(n * v, dtype=torch.float32, device=hidden.device)
    logits = buffer[: n * v].view(n, v)
    if hidden.dtype != torch.float32 or weight.dtype != torch.float32:
        logits.copy_(F.linear(hidden, weight, bias))
    elif bias is None:
        torch.mm(hidden, weight.t(), out=logits)
    else:
        torch.addmm(bias, hidden, weight.t(), out=logits)
    if scale is not None:
        logits.mul_(scale)
    return logits, buffer


def head_log_probs(
    hidden: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    scale: float | None,
    targets: Tensor,
    buffer: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """log p(target) [N] (fp32, no gradients) of the LM head (weight [V, H], bias, muP scale) on
    hidden [N, H], and the fp32 buffer that held the logits, for the next call to reuse
    (`logits_into`). log_softmax overwrites the logits in place, so a batch allocates no [N, V]
    tensor, and a second one would double the memory traffic. The values are F.log_softmax's, bit
    for bit."""
    with torch.no_grad(), torch.autocast(hidden.device.type, enabled=False):
        weight = weight.to(hidden.dtype)
        bias = None if bias is None else bias.to(hidden.dtype)
        logits, buffer = logits_into(buffer, hidden, weight, bias, scale)
        torch.log_softmax(logits, 1, out=logits)
        return logits.gather(1, targets[:, None]).squeeze(1), buffer


class _FusedLinearCrossEntropy(torch.autograd.Function):
    """LM head + masked CE sum whose backward only scales the gradients computed in forward. Only the
    inputs that need a gradient get one computed (`ctx.needs_input_grad`): a frozen head weight costs
    neither its [V, H] gradient's matmuls nor its memory. With a LoRA head, `weight` is the merged weight
    (detached) and lora_A, lora_B, lora_scaling the adapter (see `_head_chunks`)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        hidden: Tensor,
        weight: Tensor,
        bias: Tensor | None,
        lora_a: Tensor | None,
        lora_b: Tensor | None,
        labels: Tensor,
        mask: Tensor,
        scale: float | None,
        lora_scaling: float,
        chunk_rows: int,
        compute_dtype: torch.dtype,
        workspace: LogitsWorkspace | None,
    ) -> tuple[Tensor, Tensor]:
        adapter = None if lora_a is None or lora_b is None else (lora_a, lora_b)
        needs = tuple(ctx.needs_input_grad[:5])
        ce_sum, correct, grads = _head_chunks(
            hidden, weight, bias, labels, mask, scale, chunk_rows, compute_dtype, needs, adapter, workspace
        )
        assert grads is not None
        inputs = (hidden, weight, bias, lora_a, lora_b)
        ctx.dtypes = tuple(None if t is None else t.dtype for t in inputs)
        ctx.lora_scaling = lora_scaling
        ctx.save_for_backward(*grads)
        ctx.mark_non_differentiable(correct)
        return ce_sum, correct

    @staticmethod
    def backward(ctx: Any, grad_ce: Tensor, _grad_correct: Tensor | None) -> tuple[Tensor | None, ...]:
        g = grad_ce.float()
        out: list[Tensor | None] = []
        for i, (grad, dtype) in enumerate(zip(ctx.saved_tensors, ctx.dtypes, strict=True)):
            if grad is None or not ctx.needs_input_grad[i]:
                out.append(None)
            else:
                out.append((grad * (g * ctx.lora_scaling if i >= 3 else g)).to(dtype))
        return (*out, None, None, None, None, None, None, None)


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
    head = inner.lm_head
    bias, scale = head.bias, inner.logits_scale
    lora_a, lora_b, lora_scaling = getattr(head, "lora_A", None), getattr(head, "lora_B", None), 1.0
    if lora_a is not None and lora_b is not None:  # a LoRA head: merged weight, adapter gradients apart
        lora_scaling = float(getattr(head, "lora_scaling", 1.0))
        with torch.no_grad():
            weight = inner.output_weight
    else:
        weight = inner.output_weight
    chunk_rows = max(1, chunk_logits // weight.shape[0])
    flat = (hidden.reshape(b * t, h), labels.reshape(-1), loss_mask.reshape(-1).to(torch.float32))
    dtype = _compute_dtype(hidden)
    needs_grad = torch.is_grad_enabled() and any(
        x is not None and x.requires_grad for x in (hidden, weight, bias, lora_a, lora_b)
    )
    workspace = inner.__dict__.setdefault("_gptx_logits_workspace", LogitsWorkspace())
    if needs_grad:
        ce_sum, correct = _FusedLinearCrossEntropy.apply(
            flat[0], weight, bias, lora_a, lora_b, flat[1], flat[2], scale, lora_scaling, chunk_rows, dtype,
            workspace,
        )  # fmt: skip
    else:
        ce_sum, correct, _ = _head_chunks(
            flat[0], weight, bias, flat[1], flat[2], scale, chunk_rows, dtype, workspace=workspace
        )
    num_tokens = loss_mask.sum().to(torch.int64)
    if loss_scaling == "num_tokens":
        loss = ce_sum / loss_mask.sum().to(ce_sum.dtype)
    else:
        loss = ce_sum / b * loss_weight
    return LossOutput(
        loss=loss, loss_sum=ce_sum.detach(), num_tokens=num_tokens, num_correct=correct.detach()
    )
