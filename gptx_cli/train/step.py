"""One optimizer step on this rank's share of the global batch: `Stepper(...)(batch) -> StepOutput`.

`gptx train` and every benchmark call this one step (benchmarks/bench_train.py, bench_model.py,
gpu/bench_gpu.py, gpu/profile_trainer.py). It does: the micro-batches (each weighted by its share of
the global denominator: loss tokens for `loss_scaling: num_tokens`, rows for `batch_size`; DDP/FSDP2
average gradients over ranks, so N ranks compute one process's gradient), loss scaling, clipping by
value then by global norm, the optimizer and the schedule.

No host sync. Nothing in an ordinary step reads a device value on the host: the denominators come
from the device copy of the loss mask and are all-reduced on the device, the step's loss, loss-token
count, grad norm and "finite" flag come back as device scalars (`StepOutput`), and a non-finite loss
or gradient skips the update on the device (`found_inf`, as torch's GradScaler does with fused
optimizers), so it never reaches the weights. The caller reads the outputs at its log, eval and
checkpoint steps; `check_finite()` then raises ModelZoo's CheckLoss error naming the first step whose
loss (or, without dynamic loss scaling, gradient) was not finite.

Dynamic loss scaling (float16 only) keeps ModelZoo's semantics: an overflowing step is skipped, the
scale halves and the schedule is held back (the skipped step does not advance the learning rate, nor
AdamW's step count). That needs no host read either: the scale and its counters (`LossScaler`), the
schedule's step count (`LRSchedule.on_device`) and the optimizer's step count live on the device, and
the step passes the learning rate to the optimizer as a device scalar (`optimizer.step(lr=...)`).

Every optimizer takes the same call, `optimizer.step(grad_multiplier=..., found_inf=..., lr=...)` (see
`train.optim`); the step never looks at the optimizer's class. Batch keys beyond input_ids, labels
and attention_mask (e.g. VSL's position_ids) go to the loss module, and through it to the model, as
keyword arguments.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from gptx_cli import distributed
from gptx_cli.config.spec import PrecisionSpec
from gptx_cli.data.loader import model_inputs
from gptx_cli.errors import GptxError
from gptx_cli.model.loss import CHUNK_LOGITS, lm_loss
from gptx_cli.train import parallel
from gptx_cli.train.precision import LossScaler, autocast, clip_gradients_on_device


class LossModule(torch.nn.Module):
    """The model plus its loss as one module, so DDP and FSDP2 see the whole computation in forward()."""

    def __init__(
        self, model: torch.nn.Module, loss_scaling: str, loss_weight: float, chunk_logits: int | None = None
    ) -> None:
        super().__init__()
        self.model = model
        self.loss_scaling, self.loss_weight = loss_scaling, loss_weight
        self.chunk_logits = chunk_logits  # None: lm_loss's default

    def forward(
        self, input_ids: Tensor, labels: Tensor, loss_mask: Tensor, **model_kwargs: Any
    ) -> tuple[Any, ...]:
        out = lm_loss(
            self.model,
            input_ids,
            labels,
            loss_mask,
            loss_scaling=self.loss_scaling,
            loss_weight=self.loss_weight,
            chunk_logits=self.chunk_logits or CHUNK_LOGITS,
            **model_kwargs,
        )
        return out.loss, out.loss_sum, out.num_tokens, out.num_correct


@dataclass
class StepOutput:
    """One step's results, all device scalars (read them only where a sync is wanted)."""

    loss: Tensor  # float64: the global batch's loss, in the model's loss_scaling
    tokens: Tensor  # float64: loss tokens in the global batch
    grad_norm: Tensor  # float32: the global gradient norm before clipping
    finite: Tensor  # bool: the update was applied (loss and gradients finite)
    lr: float | Tensor | None = None  # the step's learning rate (a device scalar when the schedule is)


class Stepper:
    """One optimizer step per call. `module(input_ids, labels, loss_mask, **extra)` returns
    (loss, loss_sum, num_tokens, num_correct) (a `LossModule`, possibly DDP/FSDP2-wrapped)."""

    def __init__(
        self,
        module: Any,
        optimizer: torch.optim.Optimizer,
        *,
        device: torch.device | str,
        precision: PrecisionSpec | None = None,
        schedule: Any = None,
        scaler: LossScaler | None = None,
        micro_batch_size: int | None = None,
        loss_scaling: str = "num_tokens",
        dist: distributed.Dist | None = None,
        start_step: int = 0,
        before_backward: Callable[[], None] | None = None,
        before_optimizer_step: Callable[[], None] | None = None,
    ) -> None:
        self.module, self.schedule = module, schedule
        self.optimizer: Any = optimizer  # any of train.optim's: step(grad_multiplier=, found_inf=)
        self.device = torch.device(device)
        self.precision = precision or PrecisionSpec()
        self.scaler = scaler or LossScaler(self.precision)
        self._device_lr: Tensor | None = None  # dynamic loss scaling: the learning rate on the device
        if self.scaler.dynamic:
            self.scaler.to(self.device)
            if schedule is not None:
                schedule.on_device(self.device)
            else:  # no schedule: the groups' fixed learning rate (each group scales it by its lr_scale)
                group = optimizer.param_groups[0]
                lr = float(group["lr"]) / group.get("lr_scale", 1.0)
                self._device_lr = torch.full((), lr, dtype=torch.float32, device=self.device)
        self.micro = micro_batch_size
        self.by_tokens = loss_scaling == "num_tokens"
        self.dist = dist or distributed.Dist(device=str(self.device))
        self.params = [p for g in optimizer.param_groups for p in g["params"]]
        self.global_step = start_step  # the steps taken so far (the next one is global_step + 1)
        # Callback hooks (ModelZoo's ComputeNorm: train/callbacks.py); None: nothing runs
        self.before_backward, self.before_optimizer_step = before_backward, before_optimizer_step
        # CheckLoss on the device: [first bad step (or -1), its loss, its grad norm, its loss tokens]
        self._first_bad = torch.tensor([-1.0, 0.0, 0.0, 0.0], dtype=torch.float64, device=self.device)

    def __call__(self, batch: dict[str, Tensor]) -> StepOutput:
        d, dev = self.dist, self.device
        ids, labels, mask = (
            batch[k].to(dev, non_blocking=True) for k in ("input_ids", "labels", "attention_mask")
        )
        extra = model_inputs(batch, dev)  # e.g. VSL's position_ids and attention_span
        rows = ids.shape[0]
        micro = self.micro or rows
        n_micro = rows // micro
        # Each micro-batch's share of the global denominator, from the device copy of the mask.
        if self.by_tokens:
            local = mask.reshape(n_micro, -1).sum(1, dtype=torch.float64)
        else:
            local = torch.full((n_micro,), float(micro), dtype=torch.float64, device=dev)
        denom = local.sum()
        if d.enabled:
            distributed.all_reduce_tensor(denom)
        weights = (local * d.world_size / denom.clamp(min=1.0)).float()
        loss_acc = torch.zeros((), dtype=torch.float64, device=dev)
        if self.before_backward is not None:
            self.before_backward()
        for i in range(n_micro):
            s = slice(i * micro, (i + 1) * micro)
            kwargs = {k: v[s] for k, v in extra.items()}
            with parallel.set_grad_sync(self.module, i == n_micro - 1):
                with autocast(self.precision, dev.type):
                    loss = self.module(ids[s], labels[s], mask[s], **kwargs)[0]
                    weighted = loss * weights[i]
                self.scaler.scale_loss(weighted).backward()
            loss_acc += weighted.detach().double() / d.world_size
        stats = torch.stack([loss_acc, mask.sum(dtype=torch.float64)])
        if d.enabled:
            distributed.all_reduce_tensor(stats)
        step_loss, tokens = stats[0], stats[1]
        lr = self._learning_rate()
        grad_norm, finite = self._optimizer_step(step_loss, lr)
        self.global_step += 1
        # The first step whose loss (or, without dynamic loss scaling, gradient) was not finite.
        bad = ~torch.isfinite(step_loss) if self.scaler.dynamic else ~finite
        at = torch.full((), float(self.global_step), dtype=torch.float64, device=dev)  # a fill, no copy
        record = torch.stack([at, step_loss, grad_norm.double().to(dev), tokens])
        self._first_bad = torch.where(bad & (self._first_bad[0] < 0), record, self._first_bad)
        return StepOutput(loss=step_loss, tokens=tokens, grad_norm=grad_norm, finite=finite, lr=lr)

    def _learning_rate(self) -> float | Tensor | None:
        """The learning rate this step uses: the schedule's (a device scalar with dynamic loss scaling)."""
        if self.scaler.dynamic:
            return self.schedule.device_lr() if self.schedule is not None else self._device_lr
        return self.schedule.lr if self.schedule is not None else None

    def _optimizer_step(self, step_loss: Tensor, lr: float | Tensor | None) -> tuple[Tensor, Tensor]:
        """Unscale, clip and step (skipped on the device when not finite); returns (norm, finite)."""
        self.scaler.unscale_([p.grad for p in self.params if p.grad is not None])
        if self.before_optimizer_step is not None:
            self.before_optimizer_step()
        norm, multiplier = clip_gradients_on_device(
            self.params, self.precision.max_gradient_norm, self.precision.max_gradient_value
        )
        finite = torch.isfinite(step_loss) & torch.isfinite(norm).to(step_loss.device)
        found_inf = (~finite).to(torch.float32)
        if self.scaler.dynamic:
            # ModelZoo's dynamic loss scaling, on the device: a non-finite step is skipped, does not
            # count in the optimizer's or the schedule's step, halves the scale and resets its count.
            assert isinstance(lr, Tensor)
            self.optimizer.step(grad_multiplier=multiplier, found_inf=found_inf, lr=lr)
            if self.schedule is not None:
                self.schedule.step(finite)
            self.scaler.update(finite)
        else:
            self.optimizer.step(grad_multiplier=multiplier, found_inf=found_inf)
            if self.schedule is not None:
                self.schedule.step()
        self.optimizer.zero_grad(set_to_none=True)
        return norm, finite

    def check_finite(self, hint: str | None = None) -> None:
        """ModelZoo's CheckLoss at a sync point: raise naming the first non-finite step (one host read)."""
        step, loss, norm, tokens = self._first_bad.tolist()
        if step < 0:
            return
        if (
            tokens == 0 and self.by_tokens
        ):  # ModelZoo's GPTLMHeadModelLoss: sum(loss * mask) / sum(mask) = 0 / 0
            raise GptxError(
                f"loss is nan at step {int(step)}: its global batch has no loss tokens (every loss mask is 0), "
                "and loss_scaling num_tokens divides by their count, as ModelZoo does "
                "(losses/GPTLMHeadModelLoss.py); training stopped, the update was skipped",
                hint="check the data's loss masks (the attention_mask row), or use loss_scaling: batch_size",
            )
        if not math.isfinite(loss):  # ModelZoo's CheckLoss: "NaN loss detected" / "inf loss detected"
            what = f"loss is {loss} at step {int(step)}; training stopped ({'NaN' if loss != loss else 'inf'} loss detected)"
        else:
            what = f"gradient norm is {norm} at step {int(step)} (loss {loss:.4f}); training stopped"
        raise GptxError(
            f"{what}; the non-finite update was skipped",
            hint=hint or "check the learning rate, batch size, initializers and data",
        )
