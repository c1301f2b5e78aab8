"""Loss scaling, clipping, checkpoint naming and state selection: small rules checked in-process."""

from __future__ import annotations

import math

import pytest
import torch

from gptx_cli.config.spec import CheckpointSpec, ModelConfig, PrecisionSpec, RunSpec
from gptx_cli.errors import CheckpointError
from gptx_cli.train.metrics import sparkline
from gptx_cli.train.precision import LossScaler, clip_gradients, precision_notes
from gptx_cli.train.state import STATE_NAMES, parse_load_states
from gptx_cli.train.trainer import checkpoint_dir_name


def fp16(**kw) -> PrecisionSpec:
    return PrecisionSpec(enabled=True, fp16_type="float16", loss_scaling_factor="dynamic", **kw)


def test_dynamic_loss_scale_halves_on_overflow_and_doubles_after_steps_per_increase():
    scaler = LossScaler(
        fp16(initial_loss_scale=8.0, steps_per_increase=2, min_loss_scale=2.0, max_loss_scale=16.0)
    )
    assert scaler.scale == 8.0
    assert scaler.update(finite=False) is False and scaler.scale == 4.0  # step skipped
    assert scaler.update(finite=True) and scaler.scale == 4.0
    assert scaler.update(finite=True) and scaler.scale == 4.0  # 2 good steps: not past steps_per_increase
    assert scaler.update(finite=True) and scaler.scale == 8.0  # 3: ModelZoo doubles (torch would at 2)
    for _ in range(4):
        scaler.update(finite=True)
    assert scaler.scale == 16.0  # capped at max_loss_scale
    for _ in range(5):
        scaler.update(finite=False)
    assert scaler.scale == 2.0  # floored at min_loss_scale
    restored = LossScaler(fp16())
    restored.load_state_dict(scaler.state_dict())
    assert restored.state_dict() == scaler.state_dict()


def test_bf16_needs_no_loss_scaling_and_cbfloat16_runs_as_bfloat16():
    spec = PrecisionSpec(enabled=True, fp16_type="cbfloat16", loss_scaling_factor="dynamic")
    assert spec.autocast_dtype == "bfloat16"
    assert LossScaler(spec).scale == 1.0
    notes = precision_notes(spec)
    assert any("cbfloat16" in n and "bfloat16" in n for n in notes)


def test_scaled_gradients_unscale_back_to_the_true_gradient():
    scaler = LossScaler(fp16(initial_loss_scale=1024.0))
    w = torch.nn.Parameter(torch.tensor([3.0]))
    scaler.scale_loss((w * 2.0).sum()).backward()
    assert float(w.grad) == 2048.0
    scaler.unscale_([w.grad])
    assert float(w.grad) == 2.0


def test_clipping_by_value_then_norm_returns_the_norm_before_clipping():
    a, b = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(1))
    a.grad, b.grad = torch.tensor([3.0, -10.0]), torch.tensor([4.0])
    norm, multiplier = clip_gradients([a, b], max_norm=1.0, max_value=4.0)  # values -> [3, -4], [4]
    assert norm == pytest.approx(math.sqrt(9 + 16 + 16))
    assert multiplier == pytest.approx(1.0 / math.sqrt(41), rel=1e-5)
    total = math.sqrt(float((a.grad**2).sum() + (b.grad**2).sum()))
    assert total == pytest.approx(1.0, rel=1e-5)


def test_clipping_can_leave_the_gradients_for_the_optimizer_to_scale():
    a = torch.nn.Parameter(torch.zeros(2))
    a.grad = torch.tensor([3.0, 4.0])
    norm, multiplier = clip_gradients([a], max_norm=1.0, max_value=None, scale_grads=False)
    assert (norm, multiplier) == (pytest.approx(5.0), pytest.approx(0.2, rel=1e-5))
    assert torch.equal(a.grad, torch.tensor([3.0, 4.0]))
    assert clip_gradients([a], max_norm=10.0, max_value=None)[1] == 1.0  # under the limit: untouched


def test_load_checkpoint_states_accepts_all_or_a_subset_and_names_unknown_ones():
    assert parse_load_states(None) == set(STATE_NAMES) == parse_load_states("all")
    assert parse_load_states("model, optimizer") == {"model", "optimizer"}
    with pytest.raises(CheckpointError, match="unknown state weights"):
        parse_load_states("model,weights")


def test_checkpoint_names_follow_checkpoint_name_without_modelzoo_mdl_suffix():
    spec = RunSpec(model=ModelConfig(), checkpoint=CheckpointSpec(checkpoint_name="ckpt_{step}.mdl"))
    assert checkpoint_dir_name(spec, 25) == "ckpt_25"
    assert checkpoint_dir_name(RunSpec(model=ModelConfig()), 7) == "checkpoint_7"


def test_sparkline_spans_lowest_to_highest_and_buckets_long_series():
    assert sparkline([3.0, 2.0, 1.0]) == "█▅▁"
    line = sparkline([float(100 - i) for i in range(100)], width=10)
    assert len(line) == 10 and line[0] == "█" and line[-1] == "▁"
