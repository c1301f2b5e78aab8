"""Mixed precision: autocast, dynamic loss scaling (ModelZoo's DLS knobs) and gradient clipping."""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Iterable
from typing import Any

import torch

from gptx_cli.config.spec import PrecisionSpec


def autocast_dtype(spec: PrecisionSpec) -> torch.dtype | None:
    name = spec.autocast_dtype
    return None if name is None else getattr(torch, name)


def for_device(
    spec: PrecisionSpec, device_type: str, cpu_float16: bool = False
) -> tuple[PrecisionSpec, list[str]]:
    """The precision a run uses on `device_type`, with its notes. As ModelZoo's MixedPrecision callback
    (`trainer/callbacks/precision.py`, `pre_setup`), float16 on a CPU runs as bfloat16; its loss scaler
    is then torch's CUDA GradScaler, which disables itself without CUDA, so no loss scaling either.
    `backend.cpu_float16: true` (gptx extension) keeps float16 and its loss scaling on the CPU."""
    notes = []
    if spec.enabled and spec.fp16_type == "float16" and device_type == "cpu" and not cpu_float16:
        spec = dataclasses.replace(spec, fp16_type="bfloat16")
        notes.append(
            "precision: fp16_type float16 on a CPU runs as bfloat16, as ModelZoo does "
            "(trainer/callbacks/precision.py, MixedPrecision: 'Mixed precision on CPU is only supported "
            "with bfloat16'); backend.cpu_float16: true keeps float16"
        )
    return spec, notes + precision_notes(spec)


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
    scaler only reports whether the gradients are finite.

    Dynamic scaling lives on the device, so a step never reads it: the scale, the count of good steps
    since the last change and the count of skipped steps are device tensors (`to(device)` moves them;
    the train step does), updated from the step's device-side finite flag with device-side selects
    (as torch's GradScaler does in `torch._amp_update_scale_`, which keeps the scale in float32 only
    and has no floor or cap). ModelZoo's rule: a non-finite step is skipped, halves the scale
    (never below min_loss_scale) and resets the count; the good step that takes the count past
    `steps_per_increase` doubles it (never above max_loss_scale) and resets the count (cstorch.amp.
    GradScaler.update_scale: `steps_per_increase < steps_since_rescale`, one step later than torch's
    GradScaler). `scale` and `state_dict()` read them (one host read: log and
    checkpoint steps); the state dict keeps its Python numbers, so checkpoints read both ways.
    """

    def __init__(self, spec: PrecisionSpec) -> None:
        self.fp16 = spec.enabled and spec.fp16_type == "float16"
        self.dynamic = self.fp16 and spec.loss_scaling_factor == "dynamic"
        self.steps_per_increase = int(spec.steps_per_increase)
        self.min_scale = float(spec.min_loss_scale)
        self.max_scale = float(spec.max_loss_scale)
        if self.dynamic:
            initial = min(float(spec.initial_loss_scale), self.max_scale)  # ModelZoo: min(max, initial)
        elif self.fp16:
            initial = float(spec.loss_scaling_factor)
        else:
            initial = 1.0
        self._static = initial  # the scale when not dynamic
        # Dynamic: the scale (float64, as the host value was), good steps since the last change, skipped steps
        self._scale = torch.tensor(initial, dtype=torch.float64)
        self._good = torch.zeros((), dtype=torch.int32)
        self._skipped = torch.zeros((), dtype=torch.int32)

    def to(self, device: torch.device | str) -> LossScaler:
        """Keep the dynamic scale and counters on `device` (a copy queued on the device, no read)."""
        self._scale, self._good, self._skipped = (
            t.to(device) for t in (self._scale, self._good, self._skipped)
        )
        return self

    @property
    def scale(self) -> float:
        """The current scale (with dynamic scaling a host read of the device value)."""
        return float(self._scale) if self.dynamic else self._static

    @property
    def scale_tensor(self) -> torch.Tensor:
        """The dynamic scale as a device scalar (read it where a sync is wanted)."""
        return self._scale

    @property
    def good_steps(self) -> int:
        return int(self._good)

    @property
    def skipped_steps(self) -> int:
        return int(self._skipped)

    def scale_loss(self, loss: torch.Tensor) -> torch.Tensor:
        if self.dynamic:
            return loss * self._scale.to(loss.dtype)
        return loss * self._static if self._static != 1.0 else loss

    def unscale_(self, grads: list[torch.Tensor]) -> None:
        if not grads:
            return
        if self.dynamic:
            torch._foreach_mul_(grads, torch.reciprocal(self._scale).float())
        elif self._static != 1.0:
            torch._foreach_mul_(grads, 1.0 / self._static)

    def update(self, finite: bool | torch.Tensor) -> bool | torch.Tensor:
        """Record one step's outcome (a bool, or a device bool: no host read); returns whether the
        optimizer step should run (the same kind of value)."""
        if not self.dynamic:
            return finite
        flag = torch.as_tensor(finite, device=self._scale.device)
        good = torch.where(flag, self._good + 1, 0)
        grow = good > self.steps_per_increase  # ModelZoo: the count must exceed steps_per_increase
        scale = torch.where(flag, torch.where(grow, self._scale * 2.0, self._scale), self._scale * 0.5)
        self._scale = scale.clamp(min=self.min_scale, max=self.max_scale)
        self._good = torch.where(grow, 0, good)
        self._skipped = self._skipped + (~flag).to(self._skipped.dtype)
        return finite

    def state_dict(self) -> dict[str, Any]:
        if not self.dynamic:
            return {"scale": self._static, "good_steps": 0, "skipped_steps": 0}
        scale, good, skipped = torch.stack(
            [self._scale.double(), self._good.double(), self._skipped.double()]
        ).tolist()
        return {"scale": scale, "good_steps": int(good), "skipped_steps": int(skipped)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        scale, device = float(state["scale"]), self._scale.device
        if self.dynamic:
            self._scale = torch.tensor(scale, dtype=torch.float64, device=device)
        else:
            self._static = scale
        self._good = torch.tensor(int(state["good_steps"]), dtype=torch.int32, device=device)
        self._skipped = torch.tensor(int(state.get("skipped_steps", 0)), dtype=torch.int32, device=device)


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
