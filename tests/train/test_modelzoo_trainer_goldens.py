"""gptx train against Cerebras ModelZoo 2.10's own trainer (`cszoo fit`), without ModelZoo installed.

tests/golden/modelzoo/trainer/ holds, per case, the tiny config ModelZoo ran (derived from a published
config by make_goldens.py, which runs only in the ModelZoo reference environment), ModelZoo's initial
weights (its checkpoint_0, in gptx names), its per-step loss, learning rate, model_wise_grad_norm and
model_wise_params_norm (ComputeNorm), and its weights after the last step. The data is ModelZoo's
own preprocessing output (packed and VSL), committed beside them. gptx trains the same config from the
same initial weights and must agree within 1e-5 at every step.

Cases: params_gptj_6B (AdamW, warm-up + cosine decay + constant, clipping at 1.0),
params_gpt_neox_20B (untied LayerNorms, biases, betas 0.9/0.95, eps 1e-8, linear decay,
`loss_scaling: batch_size`, clipping at 0.3), params_gptj_6B_muP (muP multipliers and per-group
learning rates), VSL training (`use_vsl`), `save_initial_checkpoint`, and a LoRA run (the Lora callback
on every Linear and Embedding, weight decay 0.1).

Where the two differ below 1e-5: ModelZoo's AdamW (cerebras/pytorch/optim/AdamBase.py) keeps beta1^t
and beta2^t as float32 tensors multiplied by the float32-rounded betas, so its bias correction
sqrt(1 - beta2^t) is about 6e-6 smaller than the exact one at small t with beta2 0.999; gptx computes
it exactly, takes slightly longer steps, and its loss ends up to ~7e-6 lower after 20 steps (with
ModelZoo's float32 powers the two agree to within 1e-6). The final weights are compared at 1e-4:
Adam divides by sqrt(v), so a parameter with near-zero gradients carries float32 noise at learning-rate
scale (NeoX's eps 1e-8: 1.1e-5 on a q/k/v bias).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from train_helpers import REPO, read_metrics

from gptx_cli.checkpoint import save_checkpoint_dir
from gptx_cli.config import load_run_spec
from gptx_cli.config.lora import lora_from_raw
from gptx_cli.model.init import init_model, optimizer_param_groups
from gptx_cli.model.lora import apply_lora, lora_meta
from gptx_cli.train.trainer import TrainOptions, train

GOLDEN = REPO / "tests" / "golden" / "modelzoo" / "trainer"
TOL = 1e-5  # loss, grad norm, params norm: absolute, at every step
LR_RTOL = 1e-6  # the learning rate: relative (ModelZoo's TensorBoard scalars are float32)
WEIGHTS_TOL = 1e-4  # the weights after the last step (see the module docstring)

CASES = [
    "gptj_6b",
    "neox_20b",
    "gptj_mup",
    "gptj_vsl",
    "gptj_lora",  # adapters weight-decayed as ModelZoo's _should_apply_weight_decay (#26)
]


def golden(case: str) -> dict:
    return json.loads((GOLDEN / case / "golden.json").read_text())


def prepare(case: str, tmp_path: Path) -> tuple[Path, Path]:
    """The case's config with its data dir and model_dir filled in, and a gptx checkpoint of ModelZoo's
    initial weights (a LoRA case's holds the adapters too, as a `--lora-save-base` checkpoint)."""
    model_dir = tmp_path / "model_dir"
    text = (GOLDEN / case / "config.yaml").read_text()
    config = tmp_path / "config.yaml"
    config.write_text(text.replace("@DATA@", str(GOLDEN / "data")).replace("@MODEL_DIR@", str(model_dir)))
    spec = load_run_spec(config)
    groups = lora_from_raw(spec.raw, spec.source)
    extra = {"lora": lora_meta(groups, {"init_seed": spec.seed}, adapters_only=False)} if groups else None
    init = save_checkpoint_dir(
        tmp_path / "init", load_file(GOLDEN / case / "init.safetensors"), spec.model, step=0, extra=extra
    )
    return config, init


def compare(case: str, model_dir: Path) -> None:
    """gptx's metrics.jsonl and last checkpoint against ModelZoo's golden, step by step."""
    g = golden(case)
    ours = read_metrics(model_dir)
    assert sorted(ours) == [s["step"] for s in g["steps"]]
    for s in g["steps"]:
        r, step = ours[s["step"]], s["step"]
        assert abs(r["loss"] - s["loss"]) <= TOL, (step, "loss", r["loss"], s["loss"])
        # gptx logs the scheduled learning rate; ModelZoo every param group's (muP scales some down)
        assert r["lr"] == pytest.approx(max(s["lr"]), rel=LR_RTOL, abs=1e-12), (step, "lr", r["lr"], s["lr"])
        assert abs(r["model_wise_grad_norm"] - s["grad_norm"]) <= TOL, (step, "grad_norm", r, s)
        assert abs(r["model_wise_params_norm"] - s["params_norm"]) <= TOL, (step, "params_norm", r, s)
    last = g["steps"][-1]["step"]
    final = load_file(GOLDEN / case / "final.safetensors")
    weights = load_file(model_dir / f"checkpoint_{last}" / "model.safetensors")
    assert sorted(weights) == sorted(final)
    for name, t in final.items():
        assert (weights[name] - t).abs().max().item() <= WEIGHTS_TOL, name


@pytest.mark.parametrize("case", CASES)
def test_training_matches_modelzoo(case, tmp_path):
    """20 steps of `gptx train` (in process: the function the CLI calls, with the options of
    `--checkpoint-path INIT --load-checkpoint-states model`) from ModelZoo's checkpoint_0, as ModelZoo's
    `cszoo fit` ran them; writing checkpoint_0 again is left to test_save_initial_checkpoint."""
    config, init = prepare(case, tmp_path)
    spec = load_run_spec(config, overrides=["checkpoint.save_initial_checkpoint=false"])
    options = TrainOptions(checkpoint_path=str(init), load_checkpoint_states="model", console="plain")
    result = train(spec, options)
    assert result.end_step == 20
    compare(case, tmp_path / "model_dir")


def test_save_initial_checkpoint(tmp_path):
    """The config as ModelZoo ran it (`save_initial_checkpoint: true`): checkpoint_0 holds the initial
    weights bit for bit, at step 0, and saving it changes nothing about the 20 steps (no hidden
    optimizer step: ModelZoo preinitializes the optimizer state, and so does gptx)."""
    config, init = prepare("gptj_6b", tmp_path)
    spec = load_run_spec(config)
    assert spec.checkpoint.save_initial_checkpoint
    train(spec, TrainOptions(checkpoint_path=str(init), load_checkpoint_states="model", console="plain"))
    model_dir = tmp_path / "model_dir"
    first = model_dir / "checkpoint_0"
    assert json.loads((first / "gptx.json").read_text())["step"] == 0
    saved, initial = (
        load_file(first / "model.safetensors"),
        load_file(GOLDEN / "gptj_6b" / "init.safetensors"),
    )
    assert sorted(saved) == sorted(initial)
    assert all(torch.equal(saved[k], initial[k]) for k in initial)
    compare("gptj_6b", model_dir)


def _groups_of(case: str, tmp_path: Path) -> list[tuple[float, float, int]]:
    config, _ = prepare(case, tmp_path)
    spec = load_run_spec(config)
    model = init_model(spec.model, seed=spec.seed)
    lora = lora_from_raw(spec.raw, spec.source)
    if lora:
        apply_lora(model, lora, spec.seed)
    decay = float(spec.optimizer.params.get("weight_decay", 0.0))
    return sorted(
        (g["lr_scale"], float(g.get("weight_decay", decay)), sum(p.numel() for p in g["params"]))
        for g in optimizer_param_groups(model, spec.model)
    )


@pytest.mark.parametrize("case", CASES)
def test_param_groups_match_modelzoo(case, tmp_path):
    """The optimizer's parameter groups: learning-rate scale (muP), weight decay and number of elements
    (gptx fuses q, k and v), as ModelZoo's common/optim_utils.py configure_param_groups made them (its
    empty groups left out)."""
    g = golden(case)
    base_lr = max(max(s["lr"]) for s in g["steps"])
    step = max(g["steps"], key=lambda s: max(s["lr"]))
    modelzoo = sorted(
        (round(lr / base_lr, 6), float(pg["weight_decay"]), pg["numel"])
        for lr, pg in zip(step["lr"], g["param_groups"], strict=True)
        if pg["numel"]
    )
    ours = [(round(scale, 6), wd, n) for scale, wd, n in _groups_of(case, tmp_path)]
    assert ours == modelzoo
