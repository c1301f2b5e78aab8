"""Mixed precision: autocast, dynamic loss scaling (ModelZoo's DLS knobs) and gradient clipping."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable
from typing import Any

import torch

from gptx_cli.config.spec import PrecisionSpec


def autocast_dtype(spec: PrecisionSpec) -> torch.dtype | None:
    name = spec.autocast_dtype
    return None if name is None else getattr(torch, name)


def precision_notes(spec: PrecisionSpec) -> list[str]:
    notes = []
    if spec.enabled and spec.fp16_type == "cbfloat16":
        notes.append("precision: cbfloat16 is a Cerebras format; running as bfloat16")
    if spec.enabled and spec.fp16_type in ("bfloat16", "cbfloat16") and spec.loss_scaling_factor == "dynamic":
        notes.append("precision: bfloat16 has fp32's range, so dynamic loss scaling is not needed and is off")
    return notes


def autocast(spec: PrecisionSpec, device_type: str) -> contextlib.AbstractContextManager[Any]:
    dtype = autocast_dtype(spec)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device_type, dtype=dtype)


class LossScaler:
    """Static or dynamic loss scaling for float16 (ModelZoo: loss_scaling_factor, initial_loss_scale,
    steps_per_increase, min_loss_scale, max_loss_scale). With bfloat16 or fp32 the scale is 1 and the
    scaler only reports whether the gradients are finite."""

    def __init__(self, spec: PrecisionSpec) -> None:
        self.fp16 = spec.enabled and spec.fp16_type == "float16"
        self.dynamic = self.fp16 and spec.loss_scaling_factor == "dynamic"
        if self.dynamic:
            self.scale = float(spec.initial_loss_scale)
        elif self.fp16:
            self.scale = float(spec.loss_scaling_factor)
        else:
            self.scale = 1.0
        self.steps_per_increase = int(spec.steps_per_increase)
        self.min_scale = float(spec.min_loss_scale)
        self.max_scale = float(spec.max_loss_scale)
        self.good_steps = 0
        self.skipped_steps = 0

    def scale_loss(self, loss: torch.Tensor) -> torch.Tensor:
        return loss * self.scale if self.scale != 1.0 else loss

    def unscale_(self, grads: list[torch.Tensor]) -> None:
        if self.scale != 1.0 and grads:
            torch._foreach_mul_(grads, 1.0 / self.scale)

    def update(self, finite: bool) -> bool:
        """Record one step's outcome; returns whether the optimizer step should run."""
        if not self.dynamic:
            return finite
        if not finite:
            self.scale = max(self.scale / 2.0, self.min_scale)
            self.good_steps = 0
            self.skipped_steps += 1
            return False
        self.good_steps += 1
        if self.good_steps >= self.steps_per_increase:
            self.scale = min(self.scale * 2.0, self.max_scale)
            self.good_steps = 0
        return True

    def state_dict(self) -> dict[str, Any]:
        return {"scale": self.scale, "good_steps": self.good_steps, "skipped_steps": self.skipped_steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.scale = float(state["scale"])
        self.good_steps = int(state["good_steps"])
        self.skipped_steps = int(state.get("skipped_steps", 0))


def _local(t: torch.Tensor) -> torch.Tensor:
    # FSDP2 gradients are DTensors; norms over them are DTensors too
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def clip_gradients(
    params: Iterable[torch.nn.Parameter],
    max_norm: float | None,
    max_value: float | None,
    *,
    scale_grads: bool = True,
) -> tuple[float, float]:
    """Clip by value, then by global norm (ModelZoo order, torch's `clip_grad_norm_` coefficient).

    Returns (global grad norm before norm clipping, the norm-clipping multiplier) as floats (a host
    read; the train step uses `clip_gradients_on_device`). With `scale_grads=False` the gradients are
    left unscaled and the caller folds the multiplier into its optimizer step.
    """
    params = [p for p in params if p.grad is not None]
    norm, multiplier = clip_gradients_on_device(params, max_norm, max_value, scale_grads=scale_grads)
    return float(norm), float(multiplier)


def clip_gradients_on_device(
    params: Iterable[torch.nn.Parameter],
    max_norm: float | None,
    max_value: float | None,
    *,
    scale_grads: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`clip_gradients` without a host read: (norm, multiplier) as fp32 device scalars. The multiplier
    is min(1, max_norm / (norm + 1e-6)), and 1 where the norm is not finite (that step is skipped)."""
    params = [p for p in params if p.grad is not None]
    if max_value is not None:
        torch.nn.utils.clip_grad_value_(params, max_value)
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        zero = torch.zeros((), dtype=torch.float32)
        return zero, zero + 1.0
    get_total_norm = getattr(torch.nn.utils, "get_total_norm", None)  # torch >= 2.6
    if get_total_norm is None:  # older torch: clip_grad_norm_ with no limit only measures
        norm = _local(torch.nn.utils.clip_grad_norm_(params, math.inf, foreach=True))
    else:
        norm = _local(get_total_norm(grads, 2.0, foreach=True))
    norm = norm.float()
    one = torch.ones((), dtype=torch.float32, device=norm.device)
    if max_norm is None:
        return norm, one
    multiplier = torch.where(torch.isfinite(norm), (max_norm / (norm + 1e-6)).clamp(max=1.0), one)
    if scale_grads:
        torch._foreach_mul_(grads, multiplier)
    return norm, multiplier
