"""No hidden optimizer step: DCP's get_optimizer_state_dict (checkpoint_0 under save_initial_checkpoint,
a sharded resume) runs torch's _init_optim_state, a zero-gradient step, on an optimizer without state.
gptx preinitializes the state as ModelZoo's optimizers do, so that call finds state and takes no step."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from gptx_testing import TINY
from safetensors.torch import load_file
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict
from train_helpers import read_metrics, run_gptx, tiny_args

from gptx_cli.api import build_model
from gptx_cli.config.spec import OptimizerSpec
from gptx_cli.model.init import optimizer_param_groups
from gptx_cli.train.optim import build_optimizer
from gptx_cli.train.state import optimizer_state


def dcp_state(model: torch.nn.Module, opt: torch.optim.Optimizer) -> dict:
    """DCP's own full state dict: what a rank under DDP/FSDP2 saves (one process takes `optimizer_state`)."""
    return get_optimizer_state_dict(
        model, opt, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
    )


SPECS = {
    "AdamW": OptimizerSpec("AdamW", {"betas": [0.9, 0.95], "weight_decay": 0.1}),
    "Lion": OptimizerSpec("Lion", {"betas": [0.9, 0.99], "weight_decay": 0.1}),
    "SGD": OptimizerSpec("SGD", {"momentum": 0.9, "dampening": 0.5, "weight_decay": 0.01}),
}


def _run(name: str, snapshot_first: bool) -> tuple[dict[str, torch.Tensor], dict]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    opt = build_optimizer(SPECS[name], [{"params": list(model.parameters())}])
    for g in opt.param_groups:
        g["lr"] = 0.01
    if snapshot_first:
        dcp_state(model, opt)  # what saving checkpoint_0 does on a rank
    x = torch.randn(5, 4)
    for _ in range(3):
        opt.zero_grad()
        model(x).square().sum().backward()
        opt.step()
    return {k: v.clone() for k, v in model.state_dict().items()}, dcp_state(model, opt)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_a_state_snapshot_before_step_1_changes_nothing(name: str) -> None:
    plain, plain_state = _run(name, snapshot_first=False)
    snap, snap_state = _run(name, snapshot_first=True)
    for k in plain:
        assert torch.equal(plain[k], snap[k]), k
    for key, value in plain_state["state"].items():
        for field, tensor in value.items():
            assert torch.equal(tensor, snap_state["state"][key][field]), (key, field)


def test_adamw_counts_only_real_steps() -> None:
    _, state = _run("AdamW", snapshot_first=True)
    assert {float(v["step"]) for v in state["state"].values()} == {3.0}


def test_sgd_momentum_starts_from_a_zero_buffer_as_modelzoo() -> None:
    """cerebras.pytorch.optim.SGD.preinitialize: buffer 0, so step 1's buffer is (1 - dampening) * g."""
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(3))
    opt = build_optimizer(SPECS["SGD"], [{"params": [p]}])
    opt.param_groups[0]["lr"] = 0.1
    before = p.detach().clone()
    p.grad = torch.tensor([1.0, -2.0, 0.5])
    opt.step()
    d = before * 0.01 + p.grad  # L2 weight decay into the gradient, as torch and ModelZoo do
    torch.testing.assert_close(p.detach(), before - 0.1 * (1 - 0.5) * d, rtol=0, atol=1e-7)


@pytest.mark.slow
def test_save_initial_checkpoint_does_not_change_the_run(tiny_data, tmp_path) -> None:
    runs = {}
    for flag in ("false", "true"):
        md = tmp_path / flag
        r = run_gptx(
            "train",
            *tiny_args(
                tiny_data, md, "--max-steps", "3", "--set", f"checkpoint.save_initial_checkpoint={flag}"
            ),
        )
        assert r.returncode == 0, r.stderr
        runs[flag] = (load_file(str(md / "checkpoint_3" / "model.safetensors")), read_metrics(md))
    assert (tmp_path / "true" / "checkpoint_0").is_dir()
    (w_off, m_off), (w_on, m_on) = runs["false"], runs["true"]
    assert all(torch.equal(w_off[k], w_on[k]) for k in w_off)
    assert [m_off[s]["loss"] for s in (1, 2, 3)] == [m_on[s]["loss"] for s in (1, 2, 3)]


@pytest.mark.parametrize("tied", [False, True])
def test_one_process_saves_the_state_dcp_would_save(tied: bool) -> None:
    """`optimizer_state` on one process skips DCP (and its imports); the dictionary is DCP's, bit for bit:
    names, groups, hyperparameters and tensors, with a frozen parameter left out as DCP leaves it."""
    cfg = dataclasses.replace(TINY, share_embedding_weights=tied)
    model = build_model(cfg, seed=0)
    model.layers[0].mlp.fc_in.weight.requires_grad_(False)
    groups = optimizer_param_groups(model, cfg)
    opt = build_optimizer(SPECS["AdamW"], groups)
    ids = torch.randint(0, TINY.vocab_size, (2, 8))
    for _ in range(2):
        opt.zero_grad()
        model(ids).float().square().mean().backward()
        opt.step()
    ours, theirs = optimizer_state(model, opt), dcp_state(model, opt)
    assert ours["param_groups"] == theirs["param_groups"]
    assert ours["state"].keys() == theirs["state"].keys()
    assert "layers.0.mlp.fc_in.weight" not in ours["state"]
    for name, values in theirs["state"].items():
        assert ours["state"][name].keys() == values.keys()
        for field, tensor in values.items():
            assert torch.equal(ours["state"][name][field], tensor), (name, field)
