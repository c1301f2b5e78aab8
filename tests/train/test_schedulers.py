"""Learning rates at given steps, checked against ModelZoo's closed-form formulas computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from gptx_cli.config.spec import SchedulerSpec
from gptx_cli.errors import ConfigError
from gptx_cli.train.schedulers import LRSchedule, build_schedule

PEAK, FLOOR = 5.809e-05, 5.809e-06
WARMUP, DECAY = 12800, 1280000


def gptj_schedule():
    """The published GPT-J 6B schedule (configs/params_gptj_6B.yaml), milestones left implicit."""
    return build_schedule(
        [
            SchedulerSpec(
                "SequentialLR",
                children=[
                    SchedulerSpec(
                        "LinearLR",
                        {"total_iters": WARMUP, "initial_learning_rate": 0.0, "end_learning_rate": PEAK},
                    ),
                    SchedulerSpec(
                        "CosineDecayLR",
                        {"initial_learning_rate": PEAK, "total_iters": DECAY, "end_learning_rate": FLOOR},
                    ),
                    SchedulerSpec("ConstantLR", {"learning_rate": FLOOR}),
                ],
            )
        ]
    )


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        (0, 0.0),
        (1, PEAK / WARMUP),
        (6400, PEAK / 2),
        (12799, PEAK * 12799 / 12800),
        (12800, PEAK),  # cosine starts at its own step 0
        (12800 + 640000, FLOOR + (PEAK - FLOOR) * 0.5),  # half way down the cosine
        (12800 + 320000, FLOOR + (PEAK - FLOOR) * 0.5 * (1 + math.cos(math.pi / 4))),
        (12800 + 1280000, FLOOR),  # constant from here on
        (1493333, FLOOR),  # the config's max_steps
        (5_000_000, FLOOR),
    ],
)
def test_gptj_published_schedule_matches_modelzoo_formulas(step, expected):
    assert gptj_schedule().lr_at(step) == pytest.approx(expected, rel=1e-12, abs=1e-18)


def test_explicit_milestones_override_cumulative_total_iters():
    sched = build_schedule(
        [
            SchedulerSpec(
                "SequentialLR",
                {"milestones": [5]},
                children=[
                    SchedulerSpec("ConstantLR", {"learning_rate": 1.0, "total_iters": 100}),
                    SchedulerSpec("ConstantLR", {"learning_rate": 2.0}),
                ],
            )
        ]
    )
    assert [sched.lr_at(s) for s in (0, 4, 5, 6)] == [1.0, 1.0, 2.0, 2.0]


def test_top_level_list_runs_sequentially_like_modelzoo_legacy_lists():
    sched = build_schedule(
        [
            SchedulerSpec(
                "LinearLR", {"initial_learning_rate": 0.0, "end_learning_rate": 1.0, "total_iters": 10}
            ),
            SchedulerSpec(
                "LinearLR", {"initial_learning_rate": 1.0, "end_learning_rate": 0.0, "total_iters": 10}
            ),
        ]
    )
    assert [sched.lr_at(s) for s in (0, 5, 10, 15, 20, 30)] == pytest.approx([0, 0.5, 1, 0.5, 0, 0])


@pytest.mark.parametrize(
    ("name", "params", "step", "expected"),
    [
        ("ConstantLR", {"learning_rate": 0.3}, 99, 0.3),
        (
            "LinearLR",
            {"initial_learning_rate": 1.0, "end_learning_rate": 0.1, "total_iters": 10},
            3,
            1.0 - 0.9 * 0.3,
        ),
        (
            "PolynomialLR",
            {"initial_learning_rate": 1.0, "end_learning_rate": 0.0, "total_iters": 10, "power": 2.0},
            5,
            0.25,
        ),
        (
            "PolynomialLR",
            {"initial_learning_rate": 1.0, "end_learning_rate": 0.2, "total_iters": 10},
            11,
            0.2,
        ),
        ("ExponentialLR", {"initial_learning_rate": 1.0, "total_iters": 10, "decay_rate": 0.5}, 5, 0.5**0.5),
        (
            "ExponentialLR",
            {"initial_learning_rate": 1.0, "total_iters": 10, "decay_rate": 0.5, "staircase": True},
            15,
            0.5,
        ),
        (
            "InverseSquareRootDecayLR",
            {"initial_learning_rate": 2.0, "scale": 3.0, "warmup_steps": 100},
            10,
            0.6,
        ),
        (
            "InverseSquareRootDecayLR",
            {"initial_learning_rate": 2.0, "scale": 3.0, "warmup_steps": 100},
            400,
            0.3,
        ),
        (
            "CosineDecayLR",
            {"initial_learning_rate": 1.0, "end_learning_rate": 0.0, "total_iters": 100},
            50,
            0.5,
        ),
        (
            "CosineDecayLR",
            {"initial_learning_rate": 1.0, "end_learning_rate": 0.1, "total_iters": 100},
            250,
            0.1,
        ),
        ("CosineAnnealingLR", {"initial_learning_rate": 1.0, "T_max": 100, "eta_min": 0.0}, 150, 0.5),
        ("CosineAnnealingLR", {"initial_learning_rate": 1.0, "T_max": 100, "eta_min": 0.0}, 200, 1.0),
        ("StepLR", {"initial_learning_rate": 1.0, "step_size": 10, "gamma": 0.1}, 25, 0.01),
        ("MultiStepLR", {"initial_learning_rate": 1.0, "gamma": 0.5, "milestones": [3, 7]}, 7, 0.25),
        ("MultiStepLR", {"initial_learning_rate": 1.0, "gamma": 0.5, "milestones": [3, 7]}, 2, 1.0),
        (
            "CosineDecayLR",
            {"initial_learning_rate": 1.0, "end_learning_rate": 0.0, "decay_steps": 100},
            100,
            0.0,
        ),
    ],
)
def test_each_scheduler_formula(name, params, step, expected):
    assert build_schedule([SchedulerSpec(name, params)]).lr_at(step) == pytest.approx(expected, abs=1e-12)


def test_unknown_scheduler_and_bad_keys_are_config_errors():
    with pytest.raises(ConfigError, match="unknown scheduler 'CyclicLR'"):
        build_schedule([SchedulerSpec("CyclicLR", {})])
    with pytest.raises(ConfigError, match="CosineDecayLR"):
        build_schedule([SchedulerSpec("CosineDecayLR", {"initial_learning_rate": 1.0, "warmup": 3})])


def test_schedule_sets_group_lr_times_mup_scale_and_resumes_from_step():
    weight = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD(
        [{"params": [weight]}, {"params": [torch.nn.Parameter(torch.zeros(1))], "lr_scale": 0.25}], lr=0.0
    )
    linear = build_schedule(
        [
            SchedulerSpec(
                "LinearLR", {"initial_learning_rate": 0.0, "end_learning_rate": 1.0, "total_iters": 4}
            )
        ]
    )
    driver = LRSchedule(opt, linear)
    assert [g["lr"] for g in opt.param_groups] == [0.0, 0.0]
    driver.step()
    assert [g["lr"] for g in opt.param_groups] == [0.25, 0.0625]
    resumed = LRSchedule(opt, linear)
    resumed.load_state_dict(driver.state_dict())
    assert resumed.lr == 0.25 and opt.param_groups[1]["lr"] == 0.0625
