"""Optimizers with Cerebras ModelZoo's update rules (`cerebras.pytorch.optim`).

ModelZoo's AdamW differs from `torch.optim.AdamW` in two details that change the numbers, so gptx
implements it here instead of mapping to torch's:
  - eps is added to the *uncorrected* sqrt(v) (HF/BERT style), and the bias correction is folded into
    the step size: update = m / (sqrt(v) + eps) * sqrt(1 - b2^t) / (1 - b1^t);
  - weight decay is decoupled and added to the update before the learning rate multiplies it:
    p -= lr * (update + weight_decay * p).
Defaults are ModelZoo's: eps 1e-6, weight_decay 0.0, correct_bias True.

Speed: with bias correction on (the default) the rule is algebraically torch's AdamW with
eps_t = eps / sqrt(1 - b2^t) (divide numerator and denominator by sqrt(1 - b2^t)), so on CPU and CUDA
tensors the step runs as torch's fused AdamW kernel (Adam's L2 variant as its fused Adam): one pass
over the parameters instead of a dozen foreach passes, equal to the formula above to float rounding.
A gradient-clipping multiplier can be folded into that pass (`step(grad_multiplier=...)`).

One step call for every optimizer. Every optimizer `build_optimizer` returns takes
`step(grad_multiplier=1.0, found_inf=None, lr=None)`: `grad_multiplier` (a float or a device scalar) scales the
gradients first (the clipping multiplier) and `found_inf` (a device scalar, 1.0 = skip) skips the
whole update on the device, as torch's GradScaler does with fused optimizers, so the train step never
reads a device value on the host. Fused kernels (AdamW/Adam, SGD) take both inside the kernel; Lion
skips with a device-side select; only AdamW's term-by-term fallback (no bias correction, both decay
kinds, other devices) reads `found_inf` on the host, as GradScaler does for non-fused optimizers.
A skipped AdamW step still counts in its step count t: the train step only skips on the device where
the run then stops (a non-finite loss or gradient without dynamic loss scaling).

Float16 dynamic loss scaling skips steps and goes on, holding the schedule back (ModelZoo never calls
the optimizer for a skipped step). Only the device knows which steps were skipped, so there the train
step passes the schedule's learning rate as a device scalar, `step(..., lr=...)`: each group uses
`lr * lr_scale` (not its `lr`), and AdamW keeps its step count t on the device, where a skipped step
does not count. The fused kernel then runs with its own bias correction off (a step count whose
powers of beta are 0) and the correction folded into a device learning rate,
lr * sqrt(1 - b2^t) / (1 - b1^t), with eps on the uncorrected sqrt(v) as ModelZoo has it; decoupled
weight decay, p *= 1 - lr * weight_decay, is a separate pass (times 1 on a skipped step).
"""

from __future__ import annotations

import math
import sys
from typing import Any

import torch
from torch import Tensor

from gptx_cli.config.spec import OptimizerSpec
from gptx_cli.errors import ConfigError


class AdamW(torch.optim.Optimizer):
    """ModelZoo AdamW (also Adam, with `l2_regularization_rate` instead of decoupled decay)."""

    def __init__(
        self,
        params: Any,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-6,
        weight_decay: float = 0.0,
        correct_bias: bool = True,
        l2_regularization_rate: float = 0.0,
        fused: bool = True,
    ) -> None:
        if lr < 0.0 or eps < 0.0 or not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ConfigError(f"optimizer: invalid AdamW hyperparameters lr={lr} betas={betas} eps={eps}")
        defaults = dict(
            lr=lr,
            betas=tuple(betas),
            eps=eps,
            weight_decay=weight_decay,
            correct_bias=correct_bias,
            l2_regularization_rate=l2_regularization_rate,
        )
        super().__init__(params, defaults)
        self.fused = fused  # False: always the term-by-term foreach path
        # The step count t per group, kept on the host: eps_t is a Python float of t, and reading the
        # per-parameter step tensor would be a host read every step. Filled from the state once
        # (after construction or a load), then counted here alongside the state's tensors.
        self._host_steps: dict[int, int] = {}
        self._device_steps: dict[int, Tensor] = {}  # the same with the learning rate on the device

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._host_steps.clear()
        self._device_steps.clear()

    def preinitialize(self) -> None:
        """The state a first step finds (ModelZoo's AdamBase.preinitialize): zero moments, t = 0."""
        for group in self.param_groups:
            for p in group["params"]:
                state = self.state[p]
                state["step"] = torch.zeros((), dtype=torch.float32)
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        self._host_steps.clear()
        self._device_steps.clear()

    @torch.no_grad()
    def step(  # type: ignore[override]
        self,
        closure: Any = None,
        *,
        grad_multiplier: float | Tensor = 1.0,
        found_inf: Tensor | None = None,
        lr: Tensor | None = None,
    ) -> Any:
        """One update; `grad_multiplier` scales the gradients first (gradient clipping): inside the
        fused kernel's one pass, or, on the foreach path, in place. `found_inf` (1.0) skips it. `lr`
        (a device scalar): the schedule's learning rate on the device, and the step count with it (see
        the module docstring)."""
        loss = closure() if closure is not None else None
        groups = [
            (i, g, [p for p in g["params"] if p.grad is not None]) for i, g in enumerate(self.param_groups)
        ]
        fused = self.fused and all(_fusable(g, ps) for _, g, ps in groups if ps)
        if found_inf is not None and not fused and bool(found_inf):  # host read: foreach fallback only
            return loss
        if lr is not None:
            self._step_on_device(groups, fused, grad_multiplier, found_inf, lr)
            return loss
        for gi, group, params in groups:
            if not params:
                continue
            grads: list[torch.Tensor] = [p.grad for p in params if p.grad is not None]
            t = self._host_steps.get(gi)
            if t is None:
                first = self.state[params[0]]
                t = int(first["step"]) if "step" in first else 0
            t += 1
            self._host_steps[gi] = t
            exp_avgs, exp_avg_sqs = self._state_lists(params)
            for p in params:
                state = self.state[p]
                state["step"] = state.get("step", torch.zeros((), dtype=torch.float32)) + 1
            if fused:
                _fused_step(group, params, grads, exp_avgs, exp_avg_sqs, float(t), grad_multiplier, found_inf)
            else:
                if isinstance(grad_multiplier, Tensor) or grad_multiplier != 1.0:
                    torch._foreach_mul_(grads, grad_multiplier)
                _foreach_step(group, params, grads, exp_avgs, exp_avg_sqs, float(t))
        return loss

    def _state_lists(self, params: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        exp_avgs, exp_avg_sqs = [], []
        for p in params:
            state = self.state[p]
            if "exp_avg" not in state:
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            exp_avgs.append(state["exp_avg"])
            exp_avg_sqs.append(state["exp_avg_sq"])
        return exp_avgs, exp_avg_sqs

    def _step_on_device(
        self,
        groups: list[tuple[int, dict[str, Any], list[Tensor]]],
        fused: bool,
        grad_multiplier: float | Tensor,
        found_inf: Tensor | None,
        lr: Tensor,
    ) -> None:
        """The step with the learning rate and the step count t on the device (a skipped step does not
        count in t); nothing is read on the host (the foreach fallback read `found_inf` above)."""
        for gi, group, params in groups:
            if not params:
                continue
            device = params[0].device
            keep = torch.ones((), device=device) if found_inf is None else 1.0 - found_inf.to(device)
            t = self._device_steps.get(gi)
            if t is None:  # from the state (a copy queued on the device: no read)
                first = self.state[params[0]]
                step = first.get("step")
                t = (
                    torch.zeros((), device=device)
                    if step is None
                    else step.to(device, torch.float32, copy=True)
                )
            t = t + keep
            self._device_steps[gi] = t
            exp_avgs, exp_avg_sqs = self._state_lists(params)
            for p in params:
                self.state[p]["step"] = t  # one device count for the group (saved with the state)
            grads: list[Tensor] = [p.grad for p in params if p.grad is not None]
            group_lr = lr.to(device, torch.float64) * group.get("lr_scale", 1.0)
            if not fused:
                if isinstance(grad_multiplier, Tensor) or grad_multiplier != 1.0:
                    torch._foreach_mul_(grads, grad_multiplier)
                _foreach_step(group, params, grads, exp_avgs, exp_avg_sqs, t, group_lr.float())
                continue
            beta1, beta2 = group["betas"]
            # float64: 1 - beta2**t in float32 loses digits for small t. t = 0 only when the first
            # step is skipped (the kernel skips it).
            counted = t.double().clamp(min=1.0)
            lr_t = (group_lr * torch.sqrt(1.0 - beta2**counted) / (1.0 - beta1**counted)).float()
            decoupled = not group["l2_regularization_rate"]
            if decoupled and group["weight_decay"]:
                torch._foreach_mul_(params, (1.0 - group_lr * group["weight_decay"] * keep).float())
            kernel = torch._fused_adamw_ if decoupled else torch._fused_adam_
            no_correction = torch.full((), 1e30, dtype=torch.float32, device=device)  # beta**t = 0
            kernel(
                params,
                grads,
                exp_avgs,
                exp_avg_sqs,
                [],
                [no_correction] * len(params),
                lr=lr_t,
                beta1=beta1,
                beta2=beta2,
                weight_decay=0.0 if decoupled else group["l2_regularization_rate"],
                eps=group["eps"],
                amsgrad=False,
                maximize=False,
                grad_scale=_grad_scale(grad_multiplier, device),
                found_inf=None if found_inf is None else found_inf.to(device=device, dtype=torch.float32),
            )


def _fusable(group: dict[str, Any], params: list[torch.Tensor]) -> bool:
    """Whether torch's fused kernel computes this group's rule: bias correction on, one kind of weight
    decay, CPU/CUDA floating tensors (FSDP2's DTensor shards too: the kernel is elementwise)."""
    return (
        group["correct_bias"]
        and not (group["weight_decay"] and group["l2_regularization_rate"])
        and hasattr(torch, "_fused_adamw_")
        and all(p.device.type in ("cpu", "cuda") and p.dtype in _FUSED_DTYPES for p in params)
    )


_FUSED_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


def _fused_step(
    group: dict[str, Any],
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    exp_avgs: list[torch.Tensor],
    exp_avg_sqs: list[torch.Tensor],
    step: float,
    grad_multiplier: float | Tensor,
    found_inf: Tensor | None = None,
) -> None:
    beta1, beta2 = group["betas"]
    eps_t = group["eps"] / math.sqrt(1.0 - beta2**step)  # ModelZoo's eps on the uncorrected sqrt(v)
    decoupled = not group["l2_regularization_rate"]
    kernel = torch._fused_adamw_ if decoupled else torch._fused_adam_
    weight_decay = group["weight_decay"] if decoupled else group["l2_regularization_rate"]
    by_kind: dict[tuple[torch.device, torch.dtype], list[int]] = {}
    for i, p in enumerate(params):
        by_kind.setdefault((p.device, p.dtype), []).append(i)
    for (device, _), idx in by_kind.items():
        # The kernel reads the step count per tensor; one device scalar serves them all (made with a
        # fill kernel: a host-to-device copy would wait for the queued work).
        step_t = torch.full((), step, dtype=torch.float32, device=device)
        scale = _grad_scale(grad_multiplier, device)
        inf = None if found_inf is None else found_inf.to(device=device, dtype=torch.float32)
        kernel(
            [params[i] for i in idx],
            [grads[i] for i in idx],
            [exp_avgs[i] for i in idx],
            [exp_avg_sqs[i] for i in idx],
            [],
            [step_t] * len(idx),
            lr=group["lr"],
            beta1=beta1,
            beta2=beta2,
            weight_decay=weight_decay,
            eps=eps_t,
            amsgrad=False,
            maximize=False,
            grad_scale=scale,
            found_inf=inf,
        )


def _grad_scale(grad_multiplier: float | Tensor, device: torch.device) -> Tensor | None:
    """A fused kernel's `grad_scale` (it divides the gradients by it) for a clipping multiplier."""
    if isinstance(grad_multiplier, Tensor):  # computed on the device: no host read
        return torch.reciprocal(grad_multiplier.to(device=device, dtype=torch.float32))
    if grad_multiplier == 1.0:
        return None
    return torch.full((), 1.0 / grad_multiplier, dtype=torch.float32, device=device)


def _foreach_step(
    group: dict[str, Any],
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    exp_avgs: list[torch.Tensor],
    exp_avg_sqs: list[torch.Tensor],
    step: float | Tensor,
    lr: float | Tensor | None = None,
) -> None:
    """ModelZoo's rule term by term with foreach ops (no bias correction, mixed decay, other devices).
    `step` and `lr` (default: the group's) may be device scalars."""
    lr = group["lr"] if lr is None else lr
    beta1, beta2 = group["betas"]
    if group["l2_regularization_rate"] > 0.0:
        grads = list(torch._foreach_add(grads, params, alpha=group["l2_regularization_rate"]))
    # Elementwise, so chunking changes no number; it bounds the two temporaries (denom, updates)
    # to one chunk instead of two full copies of the model (45 GiB for GPT-J-6B).
    for lo, hi in _chunks(params):
        p_, g_, m_, v_ = params[lo:hi], grads[lo:hi], exp_avgs[lo:hi], exp_avg_sqs[lo:hi]
        torch._foreach_mul_(m_, beta1)
        torch._foreach_add_(m_, g_, alpha=1.0 - beta1)
        torch._foreach_mul_(v_, beta2)
        torch._foreach_addcmul_(v_, g_, g_, value=1.0 - beta2)
        denom = torch._foreach_sqrt(v_)
        torch._foreach_add_(denom, group["eps"])
        updates = torch._foreach_div(m_, denom)
        del denom
        if group["correct_bias"]:
            if isinstance(step, Tensor):
                t = step.double()  # float64: 1 - beta2**t in float32 loses digits for small t
                step_size: float | Tensor = (torch.sqrt(1.0 - beta2**t) / (1.0 - beta1**t)).float()
            else:
                step_size = math.sqrt(1.0 - beta2**step) / (1.0 - beta1**step)
            torch._foreach_mul_(updates, step_size)
        if group["weight_decay"]:
            torch._foreach_add_(updates, p_, alpha=group["weight_decay"])
        torch._foreach_mul_(updates, lr)
        torch._foreach_sub_(p_, updates)


_CHUNK_ELEMENTS = 2**27  # 512 MiB of fp32 per temporary


def _chunks(params: list[torch.Tensor]) -> list[tuple[int, int]]:
    """[lo, hi) index ranges of consecutive parameters holding about _CHUNK_ELEMENTS elements each."""
    ranges, lo, size = [], 0, 0
    for i, p in enumerate(params):
        size += p.numel()
        if size >= _CHUNK_ELEMENTS:
            ranges.append((lo, i + 1))
            lo, size = i + 1, 0
    if lo < len(params):
        ranges.append((lo, len(params)))
    return ranges


class Lion(torch.optim.Optimizer):
    """Lion (Chen et al. 2023): sign of an interpolated momentum, decoupled weight decay."""

    def __init__(
        self,
        params: Any,
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.99),
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(params, dict(lr=lr, betas=tuple(betas), weight_decay=weight_decay))

    def preinitialize(self) -> None:
        """The state a first step finds (ModelZoo's Lion.preinitialize): a zero momentum."""
        for group in self.param_groups:
            for p in group["params"]:
                self.state[p]["exp_avg"] = torch.zeros_like(p)

    @torch.no_grad()
    def step(  # type: ignore[override]
        self,
        closure: Any = None,
        *,
        grad_multiplier: float | Tensor = 1.0,
        found_inf: Tensor | None = None,
        lr: Tensor | None = None,
    ) -> Any:
        loss = closure() if closure is not None else None
        scaled = isinstance(grad_multiplier, Tensor) or grad_multiplier != 1.0
        skip = None if found_inf is None else found_inf > 0
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            group_lr = group["lr"] if lr is None else lr * group.get("lr_scale", 1.0)
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad * grad_multiplier if scaled else p.grad
                state = self.state[p]
                if "exp_avg" not in state:
                    state["exp_avg"] = torch.zeros_like(p)
                exp_avg = state["exp_avg"]
                update = (exp_avg * beta1 + grad * (1.0 - beta1)).sign_()
                if isinstance(group_lr, Tensor):  # the learning rate on the device
                    new_p = p.mul(1.0 - group_lr * group["weight_decay"]).sub_(update * group_lr)
                else:
                    new_p = p.mul(1.0 - group_lr * group["weight_decay"]).add_(update, alpha=-group_lr)
                new_avg = exp_avg.mul(beta2).add_(grad, alpha=1.0 - beta2)
                if skip is not None:  # skipped on the device: keep the old values
                    new_p, new_avg = torch.where(skip, p, new_p), torch.where(skip, exp_avg, new_avg)
                p.copy_(new_p)
                exp_avg.copy_(new_avg)
        return loss


class SGD(torch.optim.SGD):
    """torch's SGD with the common step call: fused (where torch has the kernel) so the clipping
    multiplier and `found_inf` act on the device."""

    def __init__(self, params: Any, lr: float = 0.0, **kwargs: Any) -> None:
        if "fused" not in kwargs and "foreach" not in kwargs:
            try:
                super().__init__(params, lr=lr, fused=True, **kwargs)
                return
            except RuntimeError:  # a device or dtype without the fused kernel: torch's default
                pass
        super().__init__(params, lr=lr, **kwargs)

    def preinitialize(self) -> None:
        """The state a first step finds (ModelZoo's SGD.preinitialize): a zero momentum buffer, so the
        first step's buffer is (1 - dampening) * grad, as in ModelZoo (torch's own SGD starts from grad)."""
        for group in self.param_groups:
            if group["momentum"] != 0:
                for p in group["params"]:
                    self.state[p]["momentum_buffer"] = torch.zeros_like(p)

    @torch.no_grad()
    def step(  # type: ignore[override]
        self,
        closure: Any = None,
        *,
        grad_multiplier: float | Tensor = 1.0,
        found_inf: Tensor | None = None,
        lr: Tensor | None = None,
    ) -> Any:
        if lr is None:
            return self._step(closure, grad_multiplier, found_inf)
        # The learning rate on the device: torch's SGD takes a tensor `lr` (fused: no host read).
        floats = [g["lr"] for g in self.param_groups]
        for g in self.param_groups:
            g["lr"] = lr.float() * g.get("lr_scale", 1.0)
        try:
            return self._step(closure, grad_multiplier, found_inf)
        finally:
            for g, value in zip(self.param_groups, floats, strict=True):
                g["lr"] = value

    def _step(self, closure: Any, grad_multiplier: float | Tensor, found_inf: Tensor | None) -> Any:
        scaled = isinstance(grad_multiplier, Tensor) or grad_multiplier != 1.0
        if all(g.get("fused") for g in self.param_groups):
            devices = {p.device for g in self.param_groups for p in g["params"]}
            device = next(iter(devices)) if len(devices) == 1 else None
            if device is not None:  # torch's fused SGD reads these attributes (as GradScaler sets them)
                self.grad_scale = _grad_scale(grad_multiplier, device) if scaled else None
                self.found_inf = None if found_inf is None else found_inf.to(device, torch.float32)
                try:
                    return super().step(closure)
                finally:
                    del self.grad_scale, self.found_inf
        grads = [p.grad for g in self.param_groups for p in g["params"] if p.grad is not None]
        if scaled and grads:
            torch._foreach_mul_(grads, grad_multiplier)
        if found_inf is not None and bool(found_inf):  # host read: no fused kernel here
            return None
        return super().step(closure)


def _adam(params: Any, weight_decay: float = 0.0, **kw: Any) -> AdamW:
    # ModelZoo's Adam: `weight_decay` is an L2 term added to the gradient, bias correction always on.
    return AdamW(params, weight_decay=0.0, l2_regularization_rate=weight_decay, correct_bias=True, **kw)


_OPTIMIZERS: dict[str, Any] = {
    "AdamW": AdamW,
    "Adam": _adam,
    "SGD": SGD,
    "Lion": Lion,
}

# Keys the config may carry that are not optimizer arguments (learning rate comes from the schedule).
_NOT_OPTIMIZER_ARGS = {
    "learning_rate",
    "lr",
    "max_gradient_norm",
    "max_gradient_value",
    "loss_scaling_factor",
}


def optimizer_learning_rate(spec: OptimizerSpec) -> float | None:
    """The constant learning rate a config gives with its optimizer (used when there are no schedulers)."""
    value = spec.params.get("learning_rate", spec.params.get("lr"))
    return float(value) if isinstance(value, (int, float)) else None


def _skip_lazy_dynamo_import() -> None:
    """torch.optim.Optimizer's methods are wrapped in `torch._disable_dynamo`, which imports torch._dynamo
    (a second of CPU, a fifth of a tiny run) at their first call, only to mark them as not to be traced.
    gptx never calls an optimizer inside a compiled region (`parallel.compile_model` compiles the blocks
    only), so while dynamo is not loaded each wrapper gets the plain method in the cache it fills itself
    (`fn.__dynamo_disable`). A later import of dynamo changes nothing: the methods still run eagerly."""
    if "torch._dynamo" in sys.modules:
        return
    for value in vars(torch.optim.Optimizer).values():
        fn = getattr(value, "__wrapped__", None)
        code = getattr(value, "__code__", None)
        if fn is not None and code is not None and code.co_qualname == "_disable_dynamo.<locals>.inner":
            fn.__dynamo_disable = fn


def build_optimizer(spec: OptimizerSpec, param_groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
    """An optimizer over `param_groups` (from `model.init.optimizer_param_groups`).

    A group's own `weight_decay` (0.0 for biases and normalisation weights) overrides the config's.
    Its state is preinitialized (zeros, step count 0), as ModelZoo's optimizers are.
    """
    factory = _OPTIMIZERS.get(spec.name)
    if factory is None:
        raise ConfigError(f"optimizer: unknown optimizer {spec.name!r} (known: {', '.join(_OPTIMIZERS)})")
    kwargs = {k: v for k, v in spec.params.items() if k not in _NOT_OPTIMIZER_ARGS}
    if "betas" in kwargs:
        kwargs["betas"] = tuple(float(b) for b in kwargs["betas"])
    if spec.name in ("AdamW", "Adam"):
        kwargs.setdefault("eps", 1e-6)
    default_wd = float(kwargs.get("weight_decay", 0.0))
    groups = []
    for group in param_groups:
        group = dict(group)
        if group.get("weight_decay") != 0.0:  # 0.0 marks biases and norms; the rest take the config's
            group["weight_decay"] = default_wd
        if spec.name == "Adam":  # Adam's weight_decay is an L2 term on the gradient
            group["l2_regularization_rate"] = group.pop("weight_decay")
            group["weight_decay"] = 0.0
        groups.append(group)
    _skip_lazy_dynamo_import()
    try:
        optimizer = factory(groups, **kwargs)
    except TypeError as err:
        raise ConfigError(f"optimizer: {spec.name}: {err}") from None
    # The state exists before the first step, as ModelZoo preinitializes it. Without it, DCP's
    # get_optimizer_state_dict (checkpoint_0 under save_initial_checkpoint, or a sharded resume) runs
    # _init_optim_state: a hidden zero-gradient step that AdamW counted in its step count t.
    optimizer.preinitialize()
    return optimizer
