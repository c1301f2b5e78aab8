"""trainer.init.callbacks / loggers: ComputeNorm's norms, TensorBoardLogger's directory, WandbLogger offline."""

from __future__ import annotations

import math

import pytest
import torch
from train_helpers import read_metrics, run_gptx, tiny_args

pytestmark = pytest.mark.slow


def test_compute_norm_tensorboard_and_wandb_offline(tiny_data, tmp_path):
    import gptx_testing
    from safetensors.torch import load_file
    from train_helpers import TEST_ENV

    model_dir, tb_dir = tmp_path / "md", tmp_path / "tb"
    r = gptx_testing.run_gptx(
        "train", *tiny_args(
            tiny_data, model_dir, "--max-steps", "2",
            "--set", "checkpoint.save_initial_checkpoint=true", "--set", "logging.enable_act_frequency=true",
            "--set", "init.callbacks=[{ComputeNorm: {}}]",
            "--set", f"init.loggers=[{{TensorBoardLogger: {{summary_dir: {tb_dir}}}}}, "
                     "{WandbLogger: {project: gptx-test, run_name: tiny}}]",
        ),
        env={**TEST_ENV, "WANDB_MODE": "offline", "WANDB_SILENT": "true"},
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    # A key accepted without effect is said at the start of the run, as validate-config says it.
    assert (
        "warning: trainer.init.logging.enable_act_frequency: accepted for ModelZoo compatibility; "
        in r.stderr
    )
    m = read_metrics(model_dir)
    # ModelZoo's names; the grad norm is the one gptx clips with (before clipping), the params norm the
    # weights before the step: checkpoint_0's for step 1.
    for step in (1, 2):
        assert m[step]["model_wise_grad_norm"] == pytest.approx(m[step]["grad_norm"], rel=1e-5)
        layers = [m[step][f"per_layer_grad_norm/layer_{i}"] for i in range(2)]
        assert all(v > 0 for v in layers) and math.hypot(*layers) < m[step]["model_wise_grad_norm"]
    weights = load_file(str(model_dir / "checkpoint_0" / "model.safetensors"))
    expected = float(torch.sqrt(sum(w.float().norm() ** 2 for w in weights.values())))
    assert m[1]["model_wise_params_norm"] == pytest.approx(expected, rel=1e-5)
    # TensorBoardLogger: events in summary_dir, not model_dir.
    assert list((tb_dir / "train").glob("events.out.tfevents.*"))
    assert not (model_dir / "train").exists()
    # WandbLogger under WANDB_MODE=offline : an offline run in model_dir/wandb.
    runs = list((model_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("run-*.wandb")), list((model_dir / "wandb").iterdir())


def test_unknown_callback_and_missing_wandb_are_one_line(tiny_data, tmp_path):
    r = run_gptx(
        "train", *tiny_args(tiny_data, tmp_path / "md", "--set", "init.callbacks=[{ComputeNrom: {}}]")
    )
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "unknown callback 'ComputeNrom' (did you mean 'ComputeNorm'?)" in r.stderr
    # A Python path whose `wandb` cannot be imported stands in for an environment without the extra.
    fake = tmp_path / "nowandb"
    fake.mkdir()
    (fake / "wandb.py").write_text("raise ImportError('No module named wandb')\n")
    import os
    import subprocess
    import sys

    from train_helpers import REPO, popen_env

    env = {**popen_env(), "PYTHONPATH": os.pathsep.join([str(fake), str(REPO)])}
    args = tiny_args(
        tiny_data, tmp_path / "md2", "--max-steps", "1", "--set", "init.loggers=[{WandbLogger: {}}]"
    )
    r = subprocess.run(
        [sys.executable, "-m", "gptx_cli.cli", "train", *args], capture_output=True, text=True, env=env
    )
    assert r.returncode == 1, r.stderr
    assert r.stderr.strip().splitlines()[-1] == (
        "error: loggers: WandbLogger needs the wandb package: pip install 'gptx[wandb]'"
    )
