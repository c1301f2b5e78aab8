"""The public train step: no host sync on ordinary steps of a real `gptx train` run, extra batch keys
reach the model, and the benchmarks share the step instead of copying it."""

from __future__ import annotations

import contextlib
import re
import traceback
import weakref

import pytest
import torch
import torch.utils._pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode
from train_helpers import REPO, tiny_args

from gptx_cli.train import step as step_mod


class ScalarReads(TorchDispatchMode):
    """Counts `aten._local_scalar_dense`: what `.item()`, `float()`, `int()` and `bool()` of a tensor
    dispatch to, i.e. a host read of a tensor's value (a device sync on a GPU). Reads of host-side batch
    values are told apart and not counted: the data loader's batch tensors are marked as they are
    yielded, and every tensor computed from marked tensors only is marked too (the trainer checks each
    batch's token ids on the loader's CPU copy). Each counted read keeps the stack that made it."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[str] = []
        self.host_reads = 0
        self._host: dict[int, weakref.ref] = {}  # id -> weak reference (tensors compare elementwise)

    def mark(self, t: torch.Tensor) -> None:
        self._host[id(t)] = weakref.ref(t)

    def marked(self, t: torch.Tensor) -> bool:
        ref = self._host.get(id(t))
        return ref is not None and ref() is t

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        inputs = [a for a in pytree.tree_leaves((args, kwargs)) if isinstance(a, torch.Tensor)]
        from_host = bool(inputs) and all(self.marked(t) for t in inputs)
        if func is torch.ops.aten._local_scalar_dense.default:
            if from_host:
                self.host_reads += 1
            else:
                self.reads.append("".join(traceback.format_stack(limit=6)[:-1]))
        out = func(*args, **kwargs)
        if from_host:
            for t in pytree.tree_leaves(out):
                if isinstance(t, torch.Tensor):
                    self.mark(t)
        return out


@contextlib.contextmanager
def marked_batches(mode: ScalarReads):
    """Mark each batch the data loader yields as host-side (wraps gptx's loader, not torch)."""
    from gptx_cli.data.loader import GptxDataLoader

    original = GptxDataLoader.__iter__

    def marking(self):
        for batch in original(self):
            for tensor in batch.values():
                mode.mark(tensor)
            yield batch

    GptxDataLoader.__iter__ = marking  # type: ignore[method-assign]
    try:
        yield
    finally:
        GptxDataLoader.__iter__ = original  # type: ignore[method-assign]


def reads_in_run(tiny_data, model_dir, steps: int, extra: tuple[str, ...] = ()) -> list[str]:
    """Scalar reads of device-side results in a real in-process `gptx train` run of `steps` steps that
    logs, evaluates and checkpoints only at its end (so every step but the first and the last is an
    ordinary one). `extra`: more config overrides."""
    from gptx_cli.config import load_run_spec
    from gptx_cli.train.trainer import TrainOptions, train

    args = tiny_args(tiny_data, model_dir)
    overrides = [args[i + 1] for i, a in enumerate(args) if a == "--set"]
    overrides += ["logging.log_steps=1000", "checkpoint.steps=1000", "loop.eval_frequency=1000", *extra]
    spec = load_run_spec(args[0], overrides=overrides)
    with ScalarReads() as mode, marked_batches(mode):
        result = train(spec, TrainOptions(model_dir=str(model_dir), max_steps=steps, console="plain"))
    assert result.end_step == steps and len(result.train_losses) == steps
    assert mode.host_reads >= steps  # the per-batch token-id check on the host copy, told apart
    return mode.reads


def test_ten_ordinary_steps_read_no_device_value_on_the_host(tiny_data, tmp_path):
    """12 steps minus 2 steps of the same run = 10 ordinary steps; they must add no scalar read (the
    loss, token count, grad norm and finite flag stay on the device until the log step)."""
    short = reads_in_run(tiny_data, tmp_path / "short", 2)
    long = reads_in_run(tiny_data, tmp_path / "long", 12)
    assert len(short) > 0  # the harness sees the reads of the first step and of the final log/save
    extra = len(long) - len(short)
    assert extra == 0, f"{extra} scalar reads in 10 ordinary steps; the last one from:\n{long[-1]}"


FP16_DYNAMIC = (
    "precision.enabled=true",
    "precision.fp16_type=float16",
    "precision.loss_scaling_factor=dynamic",
    "backend.cpu_float16=true",  # float16 on the CPU (ModelZoo would run bfloat16 there)
)


@pytest.mark.parametrize(
    "initial_scale",
    [2.0**15, 1.0e30],  # steps applied; every step overflowing (skipped, the scale halving)
    ids=["applied", "overflowing"],
)
def test_fp16_dynamic_loss_scaling_steps_read_no_device_value_on_the_host(tiny_data, tmp_path, initial_scale):
    """float16 with dynamic loss scaling: the scale, its counters, the schedule's and the optimizer's
    step counts stay on the device, so 10 ordinary steps add no scalar read either."""
    extra = (
        *FP16_DYNAMIC,
        f"precision.initial_loss_scale={initial_scale}",
        "precision.max_loss_scale=1.0e+30",
    )
    short = reads_in_run(tiny_data, tmp_path / "short", 2, extra)
    long = reads_in_run(tiny_data, tmp_path / "long", 12, extra)
    extra_reads = len(long) - len(short)
    assert extra_reads == 0, (
        f"{extra_reads} scalar reads in 10 ordinary steps; the last one from:\n{long[-1]}"
    )


class PowerLoss(torch.nn.Module):
    """loss = mean(w) * 10 ** input_ids[0, 0]: a batch whose first id is 38 overflows any loss scale
    >= 4 in the gradient (1e38 * scale / 4 > fp32's max) while its loss stays finite."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor([1.0, -2.0, 3.0, 0.5]))

    def forward(self, ids, labels, mask, **extra):
        loss = (self.w * torch.pow(10.0, ids[0, 0].float())).mean()
        return loss, loss.detach(), mask.sum(), mask.sum()


def power_batch(exponent: int) -> dict[str, torch.Tensor]:
    ids = torch.full((2, 3), exponent, dtype=torch.long)
    return {"input_ids": ids, "labels": ids.clone(), "attention_mask": torch.ones(2, 3, dtype=torch.long)}


def power_stepper(precision):
    from gptx_cli.config.spec import OptimizerSpec
    from gptx_cli.train.optim import build_optimizer
    from gptx_cli.train.schedulers import LinearLR, LRSchedule

    model = PowerLoss()
    optimizer = build_optimizer(OptimizerSpec("AdamW", {"weight_decay": 0.1}), [{"params": [model.w]}])
    schedule = LRSchedule(optimizer, LinearLR(0.1, 0.0, total_iters=10))  # lr_at(s) = 0.1 * (1 - s / 10)
    stepper = step_mod.Stepper(model, optimizer, device="cpu", precision=precision, schedule=schedule)
    return model, optimizer, schedule, stepper


def test_fp16_dynamic_loss_scaling_skips_overflows_halves_the_scale_and_holds_the_schedule_on_the_device():
    """ModelZoo's dynamic loss scaling, by hand: scale 1024, steps_per_increase 2. Steps 2 and 3
    overflow: they are skipped (the weights stay bit for bit), each halves the scale and resets the
    count of good steps, and neither advances the schedule or AdamW's step count. The third good step
    in a row (6) takes the count past steps_per_increase and doubles the scale (ModelZoo's rule). The weights equal a run of only the applied batches (steps 1, 4, 5, 6)
    without loss scaling, and no step after the first reads a device value on the host."""
    from gptx_cli.config.spec import PrecisionSpec

    fp16 = PrecisionSpec(
        enabled=True, fp16_type="float16", loss_scaling_factor="dynamic", initial_loss_scale=1024.0,
        steps_per_increase=2, min_loss_scale=1.0, max_loss_scale=4096.0, max_gradient_norm=1.0,
    )  # fmt: skip
    model, optimizer, schedule, stepper = power_stepper(fp16)
    exponents = [0, 38, 38, 0, 0, 0]
    weights, scales, lrs, finite = [], [], [], []
    mode = ScalarReads()
    for i, exponent in enumerate(exponents):
        with mode if i > 0 else contextlib.nullcontext():
            out = stepper(power_batch(exponent))
        weights.append(model.w.detach().clone())
        scales.append(stepper.scaler.scale)
        lrs.append(float(out.lr))
        finite.append(bool(out.finite))
    assert mode.reads == [], mode.reads[-1]
    assert finite == [True, False, False, True, True, True]
    assert scales == [1024.0, 512.0, 256.0, 256.0, 256.0, 512.0]
    # the schedule's step before each step: 0, 1, 1 (held), 1 (held), 2, 3
    assert lrs == pytest.approx([0.1, 0.09, 0.09, 0.09, 0.08, 0.07], rel=1e-6)
    assert torch.equal(weights[1], weights[0]) and torch.equal(weights[2], weights[0])
    assert not torch.equal(weights[3], weights[2])
    assert schedule.state_dict() == {"step": 4}
    assert stepper.scaler.state_dict() == {"scale": 512.0, "good_steps": 0, "skipped_steps": 2}
    assert float(optimizer.state[model.w]["step"]) == 4.0  # AdamW's t: the applied steps

    # the same updates as the applied batches alone, no loss scaling (AdamW's host-side step count)
    ref_model, _, ref_schedule, ref_stepper = power_stepper(PrecisionSpec(max_gradient_norm=1.0))
    ref_weights = []
    for exponent in (0, 0, 0, 0):
        ref_stepper(power_batch(exponent))
        ref_weights.append(ref_model.w.detach().clone())
    for got, want in zip([weights[0], *weights[3:]], ref_weights, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=0.0)
    assert ref_schedule.state_dict() == {"step": 4}


def test_dynamic_loss_scaling_state_resumes_and_reads_old_checkpoints():
    """The scaler's and the schedule's state dicts keep Python numbers (an old checkpoint's float scale
    loads) and a resumed stepper continues the device-side counts."""
    from gptx_cli.config.spec import PrecisionSpec
    from gptx_cli.train.precision import LossScaler

    fp16 = PrecisionSpec(
        enabled=True, fp16_type="float16", loss_scaling_factor="dynamic", steps_per_increase=2
    )
    _, _, schedule, stepper = power_stepper(fp16)
    stepper.scaler.load_state_dict({"scale": 64.0, "good_steps": 2, "skipped_steps": 3})  # the old format
    schedule.load_state_dict({"step": 5})
    stepper(power_batch(0))
    assert stepper.scaler.state_dict() == {"scale": 128.0, "good_steps": 0, "skipped_steps": 3}
    assert schedule.state_dict() == {"step": 6}
    restored = LossScaler(fp16)
    restored.load_state_dict(stepper.scaler.state_dict())
    assert restored.state_dict() == stepper.scaler.state_dict()


@pytest.mark.parametrize("name", ["AdamW", "Adam", "SGD", "Lion"])
def test_every_optimizer_takes_the_learning_rate_as_a_device_scalar(name):
    """`step(lr=...)` (dynamic loss scaling) gives the numbers of the group's float learning rate."""
    from gptx_cli.config.spec import OptimizerSpec
    from gptx_cli.train.optim import build_optimizer

    params = [torch.nn.Parameter(torch.linspace(-1.0, 1.0, 6)) for _ in range(2)]
    opts = [build_optimizer(OptimizerSpec(name, {"weight_decay": 0.1}), [{"params": [p]}]) for p in params]
    for opt in opts:
        opt.param_groups[0]["lr"] = 0.05
    for k in range(3):
        for p in params:
            p.grad = torch.linspace(0.5, -0.25, 6) * (k + 1)
        opts[0].step(grad_multiplier=torch.tensor(0.5), found_inf=torch.tensor(0.0))
        opts[1].step(grad_multiplier=torch.tensor(0.5), found_inf=torch.tensor(0.0), lr=torch.tensor(0.05))
        torch.testing.assert_close(params[1].detach(), params[0].detach(), rtol=1e-6, atol=1e-7)
    before = params[1].detach().clone()
    params[1].grad = torch.full((6,), float("inf"))
    opts[1].step(found_inf=torch.tensor(1.0), lr=torch.tensor(0.05))
    assert torch.equal(params[1].detach(), before)  # skipped on the device


def test_the_sync_count_sees_a_float_of_the_loss_put_back_into_the_step(tiny_data, tmp_path, monkeypatch):
    original = step_mod.Stepper.__call__

    def syncing_step(self, batch):
        out = original(self, batch)
        float(out.loss)  # what the old trainer did before the optimizer step
        return out

    monkeypatch.setattr(step_mod.Stepper, "__call__", syncing_step)
    short = reads_in_run(tiny_data, tmp_path / "short", 2)
    long = reads_in_run(tiny_data, tmp_path / "long", 12)
    assert len(long) - len(short) == 10


def test_extra_batch_keys_reach_the_model_as_keyword_arguments():
    from gptx_cli.config.spec import OptimizerSpec
    from gptx_cli.train.optim import build_optimizer

    seen: list[dict] = []

    class Model(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(()))

        def forward(self, ids, labels, mask, **extra):
            seen.append({k: v.clone() for k, v in extra.items()})
            loss = self.w * mask.float().mean()
            return loss, loss.detach(), mask.sum(), mask.sum()

    model = Model()
    stepper = step_mod.Stepper(
        model,
        build_optimizer(OptimizerSpec("SGD", {}), [{"params": [model.w]}]),
        device="cpu",
        micro_batch_size=2,
    )
    positions = torch.arange(4 * 3).reshape(4, 3)
    batch = {
        "input_ids": torch.zeros(4, 3, dtype=torch.long),
        "labels": torch.zeros(4, 3, dtype=torch.long),
        "attention_mask": torch.ones(4, 3, dtype=torch.long),
        "position_ids": positions,
    }
    out = stepper(batch)
    assert [s["position_ids"].tolist() for s in seen] == [positions[:2].tolist(), positions[2:].tolist()]
    assert bool(out.finite) and float(out.tokens) == 12.0


def test_no_benchmark_keeps_a_copy_of_the_optimizer_step():
    """Every benchmark times `train.step.Stepper`; none clips or calls gptx's optimizer step by itself
    (the Hugging Face baselines keep their own loop: clip_grad_norm_ and torch's AdamW)."""
    offenders = []
    for path in sorted((REPO / "benchmarks").rglob("*.py")):
        text = path.read_text()
        for n, line in enumerate(text.splitlines(), 1):
            if re.search(r"clip_gradients|grad_multiplier=|found_inf=", line):
                offenders.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
    assert not offenders, "\n".join(offenders)
    for name in ("bench_train.py", "bench_model.py", "gpu/bench_gpu.py", "gpu/profile_trainer.py"):
        assert "Stepper" in (REPO / "benchmarks" / name).read_text(), name


@pytest.mark.parametrize("name", ["AdamW", "Adam", "SGD", "Lion"])
def test_every_optimizer_takes_the_same_step_call_and_skips_on_found_inf(name):
    from gptx_cli.config.spec import OptimizerSpec
    from gptx_cli.train.optim import build_optimizer

    param = torch.nn.Parameter(torch.ones(4))
    opt = build_optimizer(OptimizerSpec(name, {}), [{"params": [param]}])
    for group in opt.param_groups:
        group["lr"] = 0.1
    param.grad = torch.full((4,), float("nan"))
    opt.step(grad_multiplier=torch.tensor(1.0), found_inf=torch.tensor(1.0))
    assert torch.equal(param.detach(), torch.ones(4))  # skipped: nothing non-finite reached it
    param.grad = torch.full((4,), 2.0)
    opt.step(grad_multiplier=torch.tensor(0.5), found_inf=torch.tensor(0.0))
    assert torch.isfinite(param).all() and not torch.equal(param.detach(), torch.ones(4))
