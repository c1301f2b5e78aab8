"""Training data without loss tokens (#26): a data directory whose data_params.json records none is
refused before step 1, naming it; a single global batch without any stops as ModelZoo's loss does
(0 / 0 with loss_scaling num_tokens), and says why rather than blaming the learning rate."""

from __future__ import annotations

import json
import shutil

import h5py
import pytest
import torch
from train_helpers import REPO, run_gptx, tiny_args

from gptx_cli.config import load_run_spec
from gptx_cli.config.spec import PrecisionSpec
from gptx_cli.errors import GptxError
from gptx_cli.model.init import init_model, optimizer_param_groups
from gptx_cli.train.optim import build_optimizer
from gptx_cli.train.step import LossModule, Stepper


def _without_loss_tokens(src, dst) -> None:
    """A copy of a preprocess output with every loss mask 0 (real HDF5), recorded so in data_params.json."""
    shutil.copytree(src, dst)
    for path in dst.glob("*.h5"):
        with h5py.File(path, "r+") as f:
            data = f["data"][...]
            data[:, 1, :] = 0  # input_ids, attention_mask (the loss mask), labels
            f["data"][...] = data
    params = json.loads((dst / "data_params.json").read_text())
    params["post-process"]["loss_valid_tokens"] = 0
    (dst / "data_params.json").write_text(json.dumps(params))


def test_a_data_dir_without_loss_tokens_is_refused_before_step_1(tiny_data, tmp_path):
    empty = tmp_path / "no_loss"
    _without_loss_tokens(tiny_data["train"], empty)
    model_dir = tmp_path / "m"
    r = run_gptx("train", *tiny_args(tiny_data, model_dir, "--set", f"train_dataloader.data_dir={empty}"))
    assert r.returncode == 1
    line = r.stderr.strip().splitlines()[0]
    assert line.startswith(
        f"error: {empty}: no loss tokens (data_params.json: post-process.loss_valid_tokens 0"
    )
    assert "learning rate" not in r.stderr
    assert not list(model_dir.glob("checkpoint_*")) and not (model_dir / "metrics.jsonl").exists()


def _stepper(loss_scaling: str) -> Stepper:
    spec = load_run_spec(REPO / "configs" / "tiny_gptj.yaml", overrides=["model.vocab_size=64"])
    model = init_model(spec.model, seed=0)
    opt = build_optimizer(spec.optimizer, optimizer_param_groups(model, spec.model))
    return Stepper(LossModule(model, loss_scaling, 1.0), opt, device="cpu", precision=PrecisionSpec(),
                   loss_scaling=loss_scaling)  # fmt: skip


def _batch(mask_value: int) -> dict[str, torch.Tensor]:
    ids = torch.randint(0, 64, (2, 17), generator=torch.Generator().manual_seed(0))
    return {"input_ids": ids[:, :-1], "labels": ids[:, 1:], "attention_mask": torch.full((2, 16), mask_value)}


def test_one_batch_without_loss_tokens_stops_as_modelzoo_and_names_the_cause():
    stepper = _stepper("num_tokens")
    out = stepper(_batch(0))
    assert torch.isnan(out.loss)  # ModelZoo's GPTLMHeadModelLoss: sum(loss * mask) / sum(mask) = 0 / 0
    with pytest.raises(GptxError) as err:
        stepper.check_finite()
    assert err.value.message.startswith("loss is nan at step 1: its global batch has no loss tokens")
    assert "losses/GPTLMHeadModelLoss.py" in err.value.message
    assert "learning rate" not in str(err.value)


def test_with_batch_size_scaling_a_batch_without_loss_tokens_has_loss_0_as_in_modelzoo():
    stepper = _stepper("batch_size")
    out = stepper(_batch(0))
    assert out.loss.item() == 0.0  # sum(loss * mask) / rows
    stepper.check_finite()  # a finite step: training goes on, as in ModelZoo
