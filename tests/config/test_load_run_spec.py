"""load_run_spec: both ModelZoo layouts -> RunSpec, overrides, and one-line errors with file:line:col."""

from __future__ import annotations

from pathlib import Path

import pytest

from gptx_cli.config import load_run_spec
from gptx_cli.errors import ConfigError, UsageError

REPO = Path(__file__).resolve().parents[2]
TINY_GPTJ = REPO / "configs" / "tiny_gptj.yaml"
TINY_NEOX = REPO / "configs" / "tiny_neox.yaml"


def test_published_trainer_config_maps_every_section(modelzoo_configs_dir):
    spec = load_run_spec(modelzoo_configs_dir / "params_gptj_6B.yaml")
    assert (spec.model.name, spec.model.hidden_size, spec.model.num_heads, spec.model.rotary_dim) == (
        "gptj",
        4096,
        16,
        64,
    )
    assert spec.model.embedding_initializer == {
        "name": "truncated_normal",
        "mean": 0.0,
        "std": 0.00446068668,
        "a": -0.00892137336,
        "b": 0.00892137336,
    }
    assert spec.optimizer.name == "AdamW"
    assert spec.optimizer.params == {"eps": 1e-06, "weight_decay": 0.1, "correct_bias": True}
    (seq,) = spec.schedulers
    assert seq.name == "SequentialLR"
    assert [c.name for c in seq.children] == ["LinearLR", "CosineDecayLR", "ConstantLR"]
    assert seq.params["milestones"] == [12800, 12800 + 1280000]
    assert seq.children[0].params == {
        "total_iters": 12800,
        "initial_learning_rate": 0.0,
        "end_learning_rate": 5.809e-05,
    }
    assert spec.precision.enabled and spec.precision.fp16_type == "cbfloat16"
    assert spec.precision.autocast_dtype == "bfloat16"
    assert spec.precision.loss_scaling_factor == "dynamic" and spec.precision.max_gradient_norm == 1.0
    assert any("cbfloat16" in n for n in spec.notes)
    assert (spec.loop.max_steps, spec.loop.eval_frequency) == (1493333, 10000)
    assert spec.checkpoint.steps == 10000 and spec.logging.log_steps == 100
    assert spec.backend.backend_type == "CSX" and spec.seed == 1 and spec.model_dir == "./model_dir"
    assert spec.train_data is not None and len(spec.train_data.data_dir) == 10
    assert spec.train_data.batch_size == 120 and spec.train_data.shuffle_seed == 1337
    assert spec.train_data.prefetch_factor == 10 and spec.train_data.persistent_workers is True
    assert spec.val_data is not None
    assert spec.val_data.data_dir == ["./language/datasets/pile_original/hdf5_dataset/val_msl2048/"]
    assert spec.raw["trainer"]["init"]["model"]["hidden_size"] == 4096


def test_legacy_layout_gives_the_same_run_spec_as_the_trainer_layout(modelzoo_configs_dir):
    legacy = load_run_spec(modelzoo_configs_dir / "params_gptj_6B_r2.3.1.yaml")
    trainer = load_run_spec(modelzoo_configs_dir / "params_gptj_6B.yaml")
    assert legacy.model == trainer.model
    assert legacy.optimizer == trainer.optimizer
    assert legacy.schedulers == trainer.schedulers
    assert legacy.precision == trainer.precision
    assert legacy.loop == trainer.loop
    assert legacy.checkpoint == trainer.checkpoint and legacy.logging == trainer.logging
    assert legacy.train_data == trainer.train_data and legacy.val_data == trainer.val_data
    assert legacy.seed == 1
    # the converted config is in the trainer layout (it is what checkpoints save)
    assert set(legacy.raw["trainer"]) == {"init", "fit", "validate", "validate_all"}
    assert legacy.raw["trainer"]["init"]["optimizer"]["adamw"]["weight_decay"] == 0.1


def test_neox_published_config_says_gptj_with_untied_layer_norm(modelzoo_configs_dir):
    spec = load_run_spec(modelzoo_configs_dir / "params_gpt_neox_20B.yaml")
    assert spec.model.name == "gptj" and spec.model.use_untied_layer_norm is True
    assert spec.model.use_projection_bias_in_attention and spec.model.use_ffn_bias_in_attention
    assert spec.optimizer.params["betas"] == [0.9, 0.95]
    assert len(spec.schedulers[0].children) == 2


def test_exponent_without_dot_is_a_float(modelzoo_configs_dir):
    # TRC2 writes `layer_norm_epsilon: 1e-05`, which YAML 1.1 reads as a string.
    spec = load_run_spec(modelzoo_configs_dir / "params_gptj_6B_TRC2.yaml")
    assert spec.model.layer_norm_epsilon == 1e-05
    assert spec.optimizer.params["eps"] == 1e-06
    assert spec.train_data is not None and spec.train_data.data_processor == "GptHDF5DataProcessor"
    assert spec.train_data.vocab_size == 50400


def test_gpt_neox_name_gets_neox_architecture_defaults(tmp_path):
    text = TINY_NEOX.read_text()
    for line in ("use_untied_layer_norm: true", "use_projection_bias_in_attention: true"):
        text = text.replace(f"      {line}\n", "")
    cfg = tmp_path / "neox.yaml"
    cfg.write_text(text)
    spec = load_run_spec(cfg)
    assert spec.model.name == "gpt-neox"
    assert spec.model.use_untied_layer_norm is True and spec.model.use_projection_bias_in_attention is True


@pytest.mark.parametrize(
    "override",
    ["trainer.init.model.hidden_size=128", "init.model.hidden_size=128", "model.hidden_size=128"],
)
def test_override_spellings_reach_the_same_key(override):
    spec = load_run_spec(TINY_GPTJ, overrides=[override])
    assert spec.model.hidden_size == 128
    assert spec.raw["trainer"]["init"]["model"]["hidden_size"] == 128


def test_overrides_parse_yaml_values_and_create_sections():
    spec = load_run_spec(
        TINY_GPTJ,
        overrides=[
            "loop.max_steps=5",
            "train_dataloader.data_dir=[a, b]",
            "backend.strategy=fsdp",
            "init.optimizer.AdamW.betas=[0.8, 0.9]",
            "checkpoint.keep_last_n=2",
        ],
    )
    assert spec.loop.max_steps == 5
    assert spec.train_data is not None and spec.train_data.data_dir == ["a", "b"]
    assert spec.backend.strategy == "fsdp" and spec.checkpoint.keep_last_n == 2
    assert spec.optimizer.params["betas"] == [0.8, 0.9]


def test_override_of_a_legacy_config_uses_trainer_paths(modelzoo_configs_dir):
    spec = load_run_spec(modelzoo_configs_dir / "params_gptj_6B_r2.3.1.yaml", overrides=["loop.max_steps=7"])
    assert spec.loop.max_steps == 7


def test_bad_override_value_is_reported_with_the_override_text():
    with pytest.raises(ConfigError, match=r"override 'model.hidden_size=abc'.*hidden_size"):
        load_run_spec(TINY_GPTJ, overrides=["model.hidden_size=abc"])


@pytest.mark.parametrize("bad", ["model.hidden_size", "nosuch.key=1", "a..b=1"])
def test_malformed_override_is_a_usage_error(bad):
    with pytest.raises(UsageError):
        load_run_spec(TINY_GPTJ, overrides=[bad])


def test_bad_value_reports_file_line_col_and_key_path(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(TINY_GPTJ.read_text().replace("hidden_size: 64", "hidden_size: big"))
    line = next(i for i, t in enumerate(cfg.read_text().splitlines(), 1) if "hidden_size: big" in t)
    with pytest.raises(ConfigError) as err:
        load_run_spec(cfg)
    assert str(err.value).startswith(f"{cfg}:{line}:7: trainer.init.model.hidden_size: ")
    assert "\n" not in str(err.value)


def test_duplicate_key_is_rejected_with_both_lines(tmp_path):
    cfg = tmp_path / "dup.yaml"
    cfg.write_text("trainer:\n  init:\n    seed: 1\n    seed: 2\n")
    with pytest.raises(
        ConfigError,
        match=r"dup.yaml:4:5: trainer.init.seed: duplicate key 'seed' \(first defined at line 3\)",
    ):
        load_run_spec(cfg)


def test_missing_file_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="no such file"):
        load_run_spec(tmp_path / "nope.yaml")


def test_yaml_syntax_error_names_the_line(tmp_path):
    cfg = tmp_path / "syntax.yaml"
    cfg.write_text("trainer:\n  init:\n    model: {hidden_size: 64\n    seed: 1\n")
    with pytest.raises(
        ConfigError, match=r"syntax.yaml:4:\d+: invalid YAML: while parsing a flow mapping at line 3"
    ):
        load_run_spec(cfg)


def test_list_of_trainers_selects_by_index(tmp_path):
    body = TINY_GPTJ.read_text().split("trainer:\n", 1)[1]
    indented = "".join("    " + line + "\n" if line else "\n" for line in body.splitlines())
    cfg = tmp_path / "two.yaml"
    cfg.write_text(
        "trainer:\n  - trainer:\n"
        + indented
        + "  - trainer:\n"
        + indented.replace("max_steps: 50", "max_steps: 9").replace("tiny_val", "val2")
    )
    assert load_run_spec(cfg).loop.max_steps == 50
    assert load_run_spec(cfg, trainer_index=1).loop.max_steps == 9
    with pytest.raises(UsageError, match="trainer index 2"):
        load_run_spec(cfg, trainer_index=2)


def test_val_dataloader_shorthand_targets_the_loader_the_config_has(tmp_path):
    text = TINY_GPTJ.read_text()
    fit_val = text[text.index("    val_dataloader: &tiny_val") : text.index("  validate:")]
    cfg = tmp_path / "eval_only.yaml"
    cfg.write_text(
        text.replace(fit_val, "").replace("    val_dataloader: *tiny_val", fit_val.replace(" &tiny_val", ""))
    )
    spec = load_run_spec(cfg, overrides=["val_dataloader.batch_size=4"])
    assert spec.val_data is not None and spec.val_data.batch_size == 4
    assert "val_dataloader" not in spec.raw["trainer"]["fit"]
    both = load_run_spec(TINY_GPTJ, overrides=["val_dataloader.batch_size=4"])
    assert both.val_data is not None and both.val_data.batch_size == 4
    assert both.raw["trainer"]["fit"]["val_dataloader"]["batch_size"] == 4
