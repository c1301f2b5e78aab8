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

    GptxDataLoader.__iter__ = marking
    try:
        yield
    finally:
        GptxDataLoader.__iter__ = original


def reads_in_run(tiny_data, model_dir, steps: int) -> list[str]:
    """Scalar reads of device-side results in a real in-process `gptx train` run of `steps` steps that
    logs, evaluates and checkpoints only at its end (so every step but the first and the last is an
    ordinary one)."""
    from gptx_cli.config import load_run_spec
    from gptx_cli.train.trainer import TrainOptions, train

    args = tiny_args(tiny_data, model_dir)
    overrides = [args[i + 1] for i, a in enumerate(args) if a == "--set"]
    overrides += ["logging.log_steps=1000", "checkpoint.steps=1000", "loop.eval_frequency=1000"]
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
