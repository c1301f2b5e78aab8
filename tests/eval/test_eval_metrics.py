"""`gptx eval` loss metrics: equal to transformers on the same batches, perplexity over tokens, checkpoint
checks against the config, --all in step order, clear errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from eval_helpers import tiny_neox
from gptx_testing import run_gptx, shared_path

from gptx_cli.errors import CheckpointError, DataError
from gptx_cli.eval.evaluate import EvalOptions, run_eval

MSL = 16
N_SAMPLES = 7  # batch_size 3: batches of 3, 3 and a ragged 1

MODEL_YAML = """\
    model:
      name: gpt-neox
      vocab_size: 50257
      hidden_size: {hidden_size}
      num_heads: 4
      num_hidden_layers: 2
      filter_size: 64
      max_position_embeddings: 64
      rotary_dim: 2
      use_untied_layer_norm: true
      share_embedding_weights: false
      use_projection_bias_in_attention: true
      use_ffn_bias_in_attention: true
      use_ffn_bias: true
      use_bias_in_output: false
      layer_norm_epsilon: {eps}
"""


def write_config(root: Path, val_dir: Path, *, hidden_size: int = 32, eps: str = "1.0e-05") -> Path:
    text = (
        "trainer:\n  init:\n    seed: 1\n"
        f"    model_dir: {root / 'model_dir'}\n"
        + MODEL_YAML.format(hidden_size=hidden_size, eps=eps)
        + "  validate:\n    val_dataloader:\n      data_processor: GptHDF5MapDataProcessor\n"
        f"      data_dir: {val_dir}\n      batch_size: 3\n      shuffle: false\n      drop_last: false\n"
    )
    path = root / f"eval_{hidden_size}_{eps}.yaml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from gptx_cli.data.hdf5 import mark_complete, write_sample_file

    root = tmp_path_factory.mktemp("evalm")
    model = tiny_neox()
    model.save_pretrained(root / "hf")
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 50257, (N_SAMPLES, MSL + 1))
    mask = (rng.random((N_SAMPLES, MSL)) > 0.3).astype(np.int32)
    samples = np.stack([ids[:, :-1], mask, ids[:, 1:]], axis=1)
    (root / "val").mkdir()
    write_sample_file(root / "val" / "data_0.h5", samples)
    (root / "empty").mkdir()
    write_sample_file(root / "empty" / "data_0.h5", np.zeros((0, 3, MSL), dtype=np.int32))
    mark_complete(root / "val")
    mark_complete(root / "empty")
    return root, model, samples


def reference_metrics(model, samples: np.ndarray, batch_size: int = 3) -> dict[str, float]:
    """transformers logits on the same batches; ModelZoo metrics computed by hand."""
    step_losses, ce_total, tokens, correct = [], 0.0, 0, 0
    for start in range(0, len(samples), batch_size):
        batch = torch.from_numpy(samples[start : start + batch_size].astype(np.int64))
        inputs, mask, labels = batch[:, 0], batch[:, 1], batch[:, 2]
        with torch.no_grad():
            logits = model(inputs).logits.float()
        ce = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="none") * mask.flatten()
        step_losses.append(ce.sum().item() / mask.sum().item())
        ce_total += ce.sum().item()
        tokens += int(mask.sum())
        correct += int(((logits.argmax(-1) == labels) & mask.bool()).sum())
    return {
        "loss": sum(step_losses) / len(step_losses),
        "lm_perplexity": math.exp(ce_total / tokens),
        "accuracy": correct / tokens,
        "num_tokens": tokens,
        "eval_steps": len(step_losses),
    }


def test_hf_dir_metrics_equal_transformers_on_the_same_batches(setup):
    root, model, samples = setup
    cfg = write_config(root, root / "val")
    res = run_gptx("eval", str(cfg), "--checkpoint-path", str(root / "hf"), "--format", "json", "--overwrite")
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout)
    ref = reference_metrics(model, samples)
    m = got["metrics"]
    assert m["eval_steps"] == 3 and m["num_samples"] == N_SAMPLES and m["num_tokens"] == ref["num_tokens"]
    assert m["loss"] == pytest.approx(ref["loss"], abs=1e-5)
    assert m["lm_perplexity"] == pytest.approx(ref["lm_perplexity"], rel=1e-5)
    assert m["accuracy"] == ref["accuracy"]
    # Perplexity weighs the ragged last batch by its tokens: it is not exp(mean of step losses).
    assert m["lm_perplexity"] != pytest.approx(math.exp(ref["loss"]), rel=1e-6)
    # Results go beside the evaluated checkpoint (here a Hugging Face dir), under its name, and say so.
    written = json.loads((root / "eval_results" / "hf.json").read_text())
    assert written["metrics"] == m
    assert f"wrote {root / 'eval_results' / 'hf.json'}" in res.stderr


def test_eval_steps_limits_the_batches(setup):
    root, model, samples = setup
    reports = run_eval(
        EvalOptions(
            config=str(write_config(root, root / "val")),
            checkpoint_path=str(root / "hf"),
            eval_steps=1,
            overwrite=True,
        ),
        log=lambda _m: None,
    )
    ref = reference_metrics(model, samples[:3])
    assert reports[0].metrics["eval_steps"] == 1
    assert reports[0].metrics["loss"] == pytest.approx(ref["loss"], abs=1e-5)


def test_shape_mismatch_is_an_error_naming_the_field(setup):
    root, _, _ = setup
    cfg = write_config(root, root / "val", hidden_size=64)
    with pytest.raises(
        CheckpointError, match=r"shapes differ\): model\.hidden_size: 64 in .*, 32 in the checkpoint"
    ):
        run_eval(
            EvalOptions(overwrite=True, config=str(cfg), checkpoint_path=str(root / "hf")),
            log=lambda _m: None,
        )


def test_non_shape_difference_follows_the_checkpoint_with_a_warning(setup):
    root, model, samples = setup
    cfg = write_config(root, root / "val", eps="1.0e-03")
    warnings: list[str] = []
    reports = run_eval(
        EvalOptions(overwrite=True, config=str(cfg), checkpoint_path=str(root / "hf")), log=warnings.append
    )
    assert any("model.layer_norm_epsilon" in w for w in warnings)
    assert reports[0].warnings == [w.removeprefix("warning: ") for w in warnings]
    assert reports[0].metrics["loss"] == pytest.approx(reference_metrics(model, samples)["loss"], abs=1e-5)


def test_empty_eval_set_is_a_clear_error(setup):
    root, _, _ = setup
    cfg = write_config(root, root / "empty")
    with pytest.raises(DataError, match="0 samples|empty"):
        run_eval(
            EvalOptions(overwrite=True, config=str(cfg), checkpoint_path=str(root / "hf")),
            log=lambda _m: None,
        )


def test_all_evaluates_every_checkpoint_in_step_order(setup):
    from gptx_cli import load_model
    from gptx_cli.checkpoint import save_checkpoint_dir

    root, model, samples = setup
    gptx_model = load_model(str(root / "hf"))
    model_dir = root / "model_dir"
    for step in (10, 2):
        save_checkpoint_dir(
            model_dir / f"checkpoint_{step}", gptx_model.state_dict(), gptx_model.cfg, step=step
        )
    (model_dir / "checkpoint_5.tmp-123").mkdir()  # an interrupted save is not a checkpoint
    cfg = write_config(root, root / "val")
    reports = run_eval(
        EvalOptions(overwrite=True, config=str(cfg), all_checkpoints=True), log=lambda _m: None
    )
    assert [r.step for r in reports] == [2, 10]
    ref = reference_metrics(model, samples)
    for r in reports:
        assert r.metrics["loss"] == pytest.approx(ref["loss"], abs=1e-5)
        assert Path(r.output or "") == model_dir / "eval_results" / f"checkpoint_{r.step}.json"
    with pytest.raises(CheckpointError, match="no checkpoints"):
        run_eval(
            EvalOptions(
                overwrite=True, config=str(cfg), all_checkpoints=True, model_dir=str(root / "nowhere")
            )
        )


def test_config_comparison_separates_shape_fields_from_the_rest():
    import dataclasses

    from gptx_cli.config.spec import ModelConfig
    from gptx_cli.eval.evaluate import compare_model_configs

    yaml_cfg = ModelConfig(hidden_size=32, num_heads=4, num_hidden_layers=1, filter_size=64, vocab_size=100)
    same = dataclasses.replace(yaml_cfg, rotary_dim=2, embedding_dropout_rate=0.1)  # 2 == 25% of head_dim 8
    assert compare_model_configs(yaml_cfg, same, config_name="c.yaml", checkpoint="ck") == []
    other = dataclasses.replace(yaml_cfg, rotary_dim=4, nonlinearity="relu")
    warnings = compare_model_configs(yaml_cfg, other, config_name="c.yaml", checkpoint="ck")
    assert [w.split(":")[0] for w in warnings] == ["model.rotary_dim", "model.nonlinearity"]
    biased = dataclasses.replace(yaml_cfg, use_ffn_bias=True, vocab_size=128)
    with pytest.raises(
        CheckpointError, match=r"model\.vocab_size: 100 in c\.yaml, 128 .*; model\.use_ffn_bias"
    ):
        compare_model_configs(yaml_cfg, biased, config_name="c.yaml", checkpoint="ck")


@pytest.mark.multiprocess
def test_nproc_2_equals_one_process(setup):
    """`gptx eval --nproc 2` (gloo on the CPU) shards the validation batches and the task documents;
    the metrics equal one process's: loss and perplexity within 1e-6, accuracies exactly."""
    root = setup[0]
    cfg = write_config(root, root / "val")
    tasks_dir = Path(__file__).parent / "data"
    args = ["eval", str(cfg), "--checkpoint-path", str(root / "hf"), "--format", "json", "--device", "cpu",
            "--tokenizer", str(shared_path("assets", "tokenizers", "gpt2")), "--tasks-dir", str(tasks_dir),
            "--tasks", "lambada_tiny,choice_tiny,wiki_tiny", "--bootstrap-iters", "200"]  # fmt: skip
    one = run_gptx(*args, "--output-dir", str(root / "nproc_1"))
    two = run_gptx(*args, "--output-dir", str(root / "nproc_2"), "--nproc", "2")
    assert one.returncode == 0, one.stderr
    assert two.returncode == 0, two.stderr
    a, b = json.loads(one.stdout), json.loads(two.stdout)
    for key in ("loss", "lm_perplexity"):
        assert b["metrics"][key] == pytest.approx(a["metrics"][key], rel=1e-6, abs=1e-6)
    for key in ("accuracy", "num_tokens", "eval_steps", "num_samples"):
        assert b["metrics"][key] == a["metrics"][key]
    assert len(a["tasks"]) == len(b["tasks"]) == 3
    for ta, tb in zip(a["tasks"], b["tasks"], strict=True):
        assert ta["num_docs"] == tb["num_docs"]
        for name, value in ta["metrics"].items():
            if name.startswith("acc"):
                assert tb["metrics"][name] == value, name
            elif isinstance(value, float):
                assert tb["metrics"][name] == pytest.approx(value, rel=1e-6), name
            else:
                assert tb["metrics"][name] == value, name
