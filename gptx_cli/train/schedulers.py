"""Learning-rate schedules with Cerebras ModelZoo's closed-form formulas (`cerebras.pytorch.optim.lr_scheduler`).

Each schedule is a pure function of the global step (`lr_at(step)`), so a resumed run needs only the
step to continue the schedule exactly. `LRSchedule` applies it to an optimizer: the learning rate
used by optimizer step `s` (counting from 0) is `lr_at(s)`, as in ModelZoo where the scheduler is
stepped after every optimizer step. Parameter groups may carry `lr_scale` (muP per-group scaling);
their learning rate is `lr_at(s) * lr_scale`.

SequentialLR follows ModelZoo: child `i + 1` takes over at `milestones[i]` and sees
`step - milestones[i]`; when the YAML gives no milestones they are the cumulative `total_iters` of the
children, as ModelZoo's config layer computes them.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gptx_cli.config.spec import SchedulerSpec
from gptx_cli.errors import ConfigError


class Schedule:
    """A learning rate as a function of the global step (subclasses with a fixed length have `total_iters`)."""

    def lr_at(self, step: int) -> float:  # pragma: no cover - abstract
        raise NotImplementedError


@dataclass
class ConstantLR(Schedule):
    learning_rate: float
    total_iters: int | None = None

    def lr_at(self, step: int) -> float:
        return self.learning_rate


@dataclass
class PolynomialLR(Schedule):
    initial_learning_rate: float
    end_learning_rate: float
    total_iters: int
    power: float = 1.0
    cycle: bool = False

    def lr_at(self, step: int) -> float:
        if step >= self.total_iters:
            return self.end_learning_rate
        # ModelZoo's `cycle` multiplier is ceil((step + 1) / total_iters) = 1 for every step below total_iters.
        fraction = 1.0 - step / self.total_iters
        return (
            fraction**self.power * (self.initial_learning_rate - self.end_learning_rate)
            + self.end_learning_rate
        )


def LinearLR(  # noqa: N802 - ModelZoo's name
    initial_learning_rate: float, end_learning_rate: float, total_iters: int, cycle: bool = False
) -> PolynomialLR:
    return PolynomialLR(initial_learning_rate, end_learning_rate, total_iters, power=1.0, cycle=cycle)


@dataclass
class ExponentialLR(Schedule):
    initial_learning_rate: float
    total_iters: int
    decay_rate: float
    staircase: bool = False

    def lr_at(self, step: int) -> float:
        power = step / self.total_iters
        if self.staircase:
            power = math.floor(power)
        return self.initial_learning_rate * self.decay_rate**power


@dataclass
class InverseExponentialTimeDecayLR(Schedule):
    initial_learning_rate: float
    step_exponent: float
    total_iters: int
    decay_rate: float
    staircase: bool = False

    def lr_at(self, step: int) -> float:
        alpha = float(step) ** self.step_exponent / self.total_iters
        if self.staircase:
            alpha = math.floor(alpha)
        return self.initial_learning_rate / (1.0 + self.decay_rate * alpha)


@dataclass
class InverseSquareRootDecayLR(Schedule):
    initial_learning_rate: float = 1.0
    scale: float = 1.0
    warmup_steps: int = 1

    def lr_at(self, step: int) -> float:
        return self.initial_learning_rate * self.scale / math.sqrt(max(self.warmup_steps, step))


@dataclass
class CosineDecayLR(Schedule):
    """Keras CosineDecay: end + (initial - end) * 0.5 * (1 + cos(pi * min(step, T) / T))."""

    initial_learning_rate: float
    end_learning_rate: float
    total_iters: int

    def lr_at(self, step: int) -> float:
        progress = 0.5 * (1.0 + math.cos(math.pi * min(step, self.total_iters) / self.total_iters))
        return self.end_learning_rate + (self.initial_learning_rate - self.end_learning_rate) * progress


@dataclass
class CosineAnnealingLR(Schedule):
    initial_learning_rate: float
    T_max: float  # noqa: N815 - ModelZoo's key
    eta_min: float = 0.0

    def lr_at(self, step: int) -> float:
        a = (math.cos(step / self.T_max * math.pi) + 1.0) / 2.0
        return self.eta_min + a * (self.initial_learning_rate - self.eta_min)


@dataclass
class StepLR(Schedule):
    initial_learning_rate: float
    step_size: int
    gamma: float

    def lr_at(self, step: int) -> float:
        return self.initial_learning_rate * self.gamma ** math.floor(step / self.step_size)


@dataclass
class MultiStepLR(Schedule):
    initial_learning_rate: float
    gamma: float
    milestones: list[int]

    def lr_at(self, step: int) -> float:
        passed = sum(1 for m in self.milestones if step >= m)
        return self.initial_learning_rate * self.gamma**passed


@dataclass
class SequentialLR(Schedule):
    schedules: list[Schedule]
    milestones: list[int]

    def __post_init__(self) -> None:
        if len(self.milestones) != len(self.schedules) - 1:
            raise ConfigError(
                f"SequentialLR needs one milestone fewer than schedulers: got {len(self.schedules)} "
                f"schedulers and milestones {self.milestones}"
            )
        last = getattr(self.schedules[-1], "total_iters", None)
        self.total_iters: int | None = (
            None if last is None or not self.milestones else self.milestones[-1] + last
        )

    def lr_at(self, step: int) -> float:
        index = bisect.bisect_right(self.milestones, step)
        start = self.milestones[index - 1] if index > 0 else 0
        return self.schedules[index].lr_at(step - start)


_LEGACY_KEYS = {
    "decay_steps": "total_iters",
    "steps": "total_iters",
    "learning_rate_end": "end_learning_rate",
}


def _build_one(spec: SchedulerSpec, where: str) -> Schedule:
    params = {_LEGACY_KEYS.get(k, k): v for k, v in spec.params.items()}
    if spec.name == "SequentialLR":
        children = [_build_one(c, f"{where}.schedulers[{i}]") for i, c in enumerate(spec.children)]
        milestones = params.pop("milestones", None)
        if milestones is None:
            milestones = cumulative_milestones(children, where)
        _reject_unknown(params, set(), where, spec.name)
        return SequentialLR(children, [int(m) for m in milestones])
    factory = _FACTORIES.get(spec.name)
    if factory is None:
        known = ", ".join(sorted([*_FACTORIES, "SequentialLR"]))
        raise ConfigError(f"{where}: unknown scheduler {spec.name!r} (known: {known})")
    try:
        return factory(**params)
    except TypeError as err:
        raise ConfigError(f"{where}: {spec.name}: {err}") from None


def _reject_unknown(params: dict[str, Any], allowed: set[str], where: str, name: str) -> None:
    extra = sorted(set(params) - allowed)
    if extra:
        raise ConfigError(f"{where}: {name} does not take {', '.join(extra)}")


def cumulative_milestones(children: list[Schedule], where: str = "schedulers") -> list[int]:
    """ModelZoo's implicit SequentialLR milestones: running sums of the children's total_iters."""
    milestones, total = [], 0
    for i, child in enumerate(children[:-1]):
        length = getattr(child, "total_iters", None)
        if length is None:
            raise ConfigError(f"{where}.schedulers[{i}]: needs total_iters to place the next scheduler")
        total += int(length)
        milestones.append(total)
    return milestones


_FACTORIES: dict[str, Callable[..., Schedule]] = {
    "ConstantLR": ConstantLR,
    "LinearLR": LinearLR,
    "PolynomialLR": PolynomialLR,
    "ExponentialLR": ExponentialLR,
    "InverseExponentialTimeDecayLR": InverseExponentialTimeDecayLR,
    "InverseSquareRootDecayLR": InverseSquareRootDecayLR,
    "CosineDecayLR": CosineDecayLR,
    "CosineAnnealingLR": CosineAnnealingLR,
    "StepLR": StepLR,
    "MultiStepLR": MultiStepLR,
}


def build_schedule(specs: list[SchedulerSpec], default_lr: float | None = None) -> Schedule:
    """The run's schedule from `RunSpec.schedulers`.

    Several top-level schedulers run one after another (ModelZoo's legacy list form); none means a
    constant `default_lr` (the optimizer's `learning_rate`, 1e-3 if unset).
    """
    if not specs:
        return ConstantLR(1e-3 if default_lr is None else float(default_lr))
    schedules = [_build_one(s, f"schedulers[{i}]") for i, s in enumerate(specs)]
    if len(schedules) == 1:
        return schedules[0]
    return SequentialLR(schedules, cumulative_milestones(schedules))


class LRSchedule:
    """Drives an optimizer's per-group learning rate from a `Schedule` and the global step.

    `on_device(device)` moves the step count to the device (float16 dynamic loss scaling, where a
    skipped step holds the schedule back and only the device knows which steps were skipped): the
    schedule is then a table of `lr_at(0..)` on the device, `device_lr()` indexes it with the device
    step count, `step(applied)` advances that count by a device 0/1, and the optimizer takes the
    learning rate from the step call (`train.optim`) instead of its groups. Nothing is read on the
    host but at `lr` and `state_dict()` (log and checkpoint steps).
    """

    _TABLE_MIN = 1024

    def __init__(self, optimizer: Any, schedule: Schedule, step: int = 0) -> None:
        self.optimizer = optimizer
        self.schedule = schedule
        self.step_count = step
        self._device_step: Any = None  # torch int64 scalar in device mode
        self._table: Any = None  # lr_at(0 .. len - 1), float64 on the device
        self.apply()

    @property
    def lr(self) -> float:
        if self._device_step is not None:
            return float(self.device_lr())  # a host read
        return self.schedule.lr_at(self.step_count)

    def apply(self) -> None:
        lr = self.schedule.lr_at(self.step_count)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)

    def on_device(self, device: Any) -> None:
        import torch

        self._device_step = torch.full((), self.step_count, dtype=torch.int64, device=device)
        self._table = None

    @property
    def on_device_mode(self) -> bool:
        return self._device_step is not None

    def device_lr(self) -> Any:
        """The learning rate at the device step count, as a float64 device scalar (the table covers
        `step_count`, the steps taken, which the device count of applied steps cannot exceed)."""
        import torch

        needed = self.step_count + 1
        if self._table is None or len(self._table) < needed:
            # Grown by doubling (a host-to-device copy from pinned memory: queued, no sync).
            size = max(self._TABLE_MIN, 2 * needed)
            table = torch.tensor([self.schedule.lr_at(s) for s in range(size)], dtype=torch.float64)
            device = self._device_step.device
            if device.type == "cuda":
                table = table.pin_memory()
            self._table = table.to(device, non_blocking=True)
        return torch.take(self._table, self._device_step.clamp(max=len(self._table) - 1))

    def step(self, applied: Any = None) -> None:
        """One step taken; in device mode `applied` (a device bool/0-1) says whether it counts."""
        if self._device_step is not None:
            self._device_step += 1 if applied is None else applied.to(self._device_step.dtype)
            self.step_count += 1  # an upper bound of the device count (steps taken)
            return
        self.step_count += 1
        self.apply()

    def state_dict(self) -> dict[str, Any]:
        if self._device_step is not None:
            return {"step": int(self._device_step)}  # a host read (checkpoint steps)
        return {"step": self.step_count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step_count = int(state["step"])
        if self._device_step is not None:
            self._device_step.fill_(self.step_count)
        self.apply()
