"""ModelZoo optimizer update rules, checked against one step computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from gptx_cli.config.spec import OptimizerSpec
from gptx_cli.errors import ConfigError
from gptx_cli.train.optim import build_optimizer


def one_step(spec: OptimizerSpec, p0: float, grad: float, lr: float, steps: int = 1) -> float:
    param = torch.nn.Parameter(torch.tensor([p0], dtype=torch.float64))
    opt = build_optimizer(spec, [{"params": [param]}])
    for group in opt.param_groups:
        group["lr"] = lr
    for _ in range(steps):
        param.grad = torch.tensor([grad], dtype=torch.float64)
        opt.step()
    return float(param.detach()[0])


def test_adamw_defaults_are_modelzoo_eps_1e6_no_decay_bias_correction():
    opt = build_optimizer(OptimizerSpec("AdamW", {}), [{"params": [torch.nn.Parameter(torch.zeros(1))]}])
    group = opt.param_groups[0]
    assert (group["eps"], group["weight_decay"], group["correct_bias"]) == (1e-6, 0.0, True)


def test_adamw_step_matches_modelzoo_formula():
    lr, wd, eps, b1, b2, p, g = 0.1, 0.1, 1e-6, 0.9, 0.999, 1.0, 0.5
    got = one_step(OptimizerSpec("AdamW", {"weight_decay": wd, "eps": eps, "betas": [b1, b2]}), p, g, lr)
    m, v = (1 - b1) * g, (1 - b2) * g * g
    # eps on the uncorrected sqrt(v); correction folded into the step size; decay added before lr
    update = m / (math.sqrt(v) + eps) * math.sqrt(1 - b2) / (1 - b1) + wd * p
    assert got == pytest.approx(p - lr * update, rel=1e-12)


def test_adamw_two_steps_and_without_bias_correction():
    lr, b1, b2, eps = 0.01, 0.9, 0.999, 1e-6
    got = one_step(OptimizerSpec("AdamW", {"correct_bias": False}), 2.0, 1.0, lr, steps=2)
    p = 2.0
    m = v = 0.0
    for _ in range(2):
        m, v = b1 * m + (1 - b1), b2 * v + (1 - b2)
        p -= lr * m / (math.sqrt(v) + eps)
    assert got == pytest.approx(p, rel=1e-12)


def test_adam_weight_decay_is_l2_on_the_gradient():
    lr, wd, p, g = 0.1, 0.5, 1.0, 0.5
    got = one_step(OptimizerSpec("Adam", {"weight_decay": wd}), p, g, lr)
    g2 = g + wd * p
    m, v = 0.1 * g2, 0.001 * g2 * g2
    assert got == pytest.approx(p - lr * m / (math.sqrt(v) + 1e-6) * math.sqrt(0.001) / 0.1, rel=1e-12)


def test_groups_marked_zero_decay_keep_it_others_take_the_config_value():
    decayed, exempt = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(2))
    opt = build_optimizer(
        OptimizerSpec("AdamW", {"weight_decay": 0.1}),
        [{"params": [decayed]}, {"params": [exempt], "weight_decay": 0.0}],
    )
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]


def test_unknown_optimizer_and_argument_are_config_errors():
    params = [{"params": [torch.nn.Parameter(torch.zeros(1))]}]
    with pytest.raises(ConfigError, match="unknown optimizer 'Adafactor'"):
        build_optimizer(OptimizerSpec("Adafactor", {}), params)
    with pytest.raises(ConfigError, match="AdamW"):
        build_optimizer(OptimizerSpec("AdamW", {"momentum": 0.9}), params)


def test_adamw_chunked_update_is_bit_identical_to_one_chunk(monkeypatch):
    """Chunking the foreach update (to bound its temporaries) must not change a single number."""
    import torch

    from gptx_cli.train import optim

    def run() -> list[torch.Tensor]:
        torch.manual_seed(0)
        params = [torch.nn.Parameter(torch.randn(n)) for n in (5, 17, 3, 40, 8)]
        # correct_bias=False keeps it on the chunked foreach path (the fused kernel needs bias correction)
        opt = optim.AdamW(params, lr=1e-2, weight_decay=0.1, correct_bias=False)
        for _ in range(3):
            for p in params:
                p.grad = torch.randn_like(p)
            opt.step()
        return [p.detach().clone() for p in params]

    whole = run()
    monkeypatch.setattr(optim, "_CHUNK_ELEMENTS", 20)
    assert len(optim._chunks([torch.empty(n) for n in (5, 17, 3, 40, 8)])) == 3
    for a, b in zip(whole, run(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("name", ["AdamW", "Adam"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fused_kernel_path_equals_the_term_by_term_rule(name, dtype):
    """With bias correction, ModelZoo's rule runs as torch's fused kernel with eps / sqrt(1 - b2^t):
    the same numbers as the foreach path to float rounding, over steps, decay and a clip multiplier."""

    def run(fused: bool) -> list[torch.Tensor]:
        gen = torch.Generator().manual_seed(0)
        params = [torch.nn.Parameter(torch.randn(n, generator=gen, dtype=dtype)) for n in (7, 64, 3)]
        opt = build_optimizer(
            OptimizerSpec(name, {"weight_decay": 0.1, "betas": [0.9, 0.95]}),
            [{"params": params[:2]}, {"params": params[2:], "weight_decay": 0.0}],
        )
        opt.fused = fused
        for group in opt.param_groups:
            group["lr"] = 1e-2
        for step in range(5):
            for p in params:
                p.grad = torch.randn(p.shape, generator=gen, dtype=dtype)
            opt.step(grad_multiplier=0.5 if step == 2 else 1.0)
        return [p.detach().clone() for p in params]

    fused, reference = run(True), run(False)
    tol = 1e-6 if dtype == torch.float32 else 1e-13
    for a, b in zip(fused, reference, strict=True):
        assert torch.allclose(a, b, rtol=tol, atol=tol)
