"""The YAML loader (positions, anchors, merges, duplicates) and the legacy -> trainer conversion."""

from __future__ import annotations

import pytest

from gptx_cli.config import load_run_spec
from gptx_cli.config.legacy import convert_legacy
from gptx_cli.config.load import LocatedConfigError, load_yaml_text
from gptx_cli.config.validate import validate_file


def test_positions_of_keys_and_list_items():
    doc = load_yaml_text("a:\n  b: 1\n  c:\n    - x\n    - {d: 2}\n", "t.yaml")
    assert doc.positions[("a",)] == (1, 1)
    assert doc.positions[("a", "b")] == (2, 3)
    assert doc.positions[("a", "c", 0)] == (4, 7)
    assert doc.positions[("a", "c", 1, "d")] == (5, 8)
    assert doc.where(("a", "c", 1, "missing", "deeper")) == (5, 7)  # nearest written ancestor


def test_aliases_are_independent_copies_and_merges_override():
    doc = load_yaml_text("base: &b {x: 1, y: [1, 2]}\nuse: *b\nmerged:\n  <<: *b\n  x: 3\n", "t.yaml")
    assert doc.data["use"] == {"x": 1, "y": [1, 2]}
    assert doc.data["merged"] == {"x": 3, "y": [1, 2]}
    doc.data["use"]["y"].append(3)
    assert doc.data["base"]["y"] == [1, 2]


def test_scalars_follow_pyyaml_plus_exponent_floats():
    data = load_yaml_text("a: 1e-05\nb: 2E+3\nc: 7\nd: 1.0e-5\ne: 'x'\nf: yes\ng: ~\nh: 1_000\n").data
    assert data == {"a": 1e-05, "b": 2000.0, "c": 7, "d": 1e-05, "e": "x", "f": True, "g": None, "h": 1000}
    assert isinstance(data["c"], int) and isinstance(data["a"], float)


def test_duplicate_keys_are_errors_but_merge_keys_are_not():
    with pytest.raises(LocatedConfigError) as err:
        load_yaml_text("a: 1\nb: 2\na: 3\n", "d.yaml")
    assert (err.value.line, err.value.col, err.value.path) == (3, 1, "a")
    assert "first defined at line 1" in str(err.value)
    assert load_yaml_text("x: &x {k: 1}\ny:\n  <<: *x\n  k: 2\n").data["y"] == {"k": 2}


def test_recursive_alias_is_an_error_not_a_hang():
    with pytest.raises(LocatedConfigError, match="recursive alias"):
        load_yaml_text("a: &a [1, *a]\n", "r.yaml")


LEGACY = """\
train_input:
  data_processor: GptHDF5MapDataProcessor
  data_dir: ./train
  batch_size: 8
eval_input:
  data_processor: GptHDF5MapDataProcessor
  data_dir: ./val
  batch_size: 8
model:
  hidden_size: 64
  num_heads: 4
  num_hidden_layers: 2
  filter_size: 256
  vocab_size: 1000
  max_position_embeddings: 128
  mixed_precision: true
  fp16_type: bfloat16
optimizer:
  optimizer_type: SGD
  momentum: 0.9
  learning_rate: 0.01
  grad_accum_steps: 2
  max_gradient_norm: 0.5
runconfig:
  max_steps: 10
  checkpoint_steps: 5
  max_checkpoints: 2
  checkpoint_path: ./ckpt
  seed: 3
  model_dir: ./out
  mode: train
"""


def test_legacy_mapping_of_every_moved_key(tmp_path):
    cfg = tmp_path / "legacy.yaml"
    cfg.write_text(LEGACY)
    spec = load_run_spec(cfg)
    assert spec.optimizer.name == "SGD" and spec.optimizer.params == {"momentum": 0.9, "learning_rate": 0.01}
    assert [(s.name, s.params) for s in spec.schedulers] == [("ConstantLR", {"learning_rate": 0.01})]
    assert spec.loop.grad_accum_steps == 2 and spec.loop.max_steps == 10
    assert spec.precision.enabled and spec.precision.fp16_type == "bfloat16"
    assert spec.precision.max_gradient_norm == 0.5
    assert spec.checkpoint.steps == 5 and spec.checkpoint.keep_last_n == 2
    assert spec.ckpt_path == "./ckpt" and spec.seed == 3 and spec.model_dir == "./out"
    assert spec.train_data is not None and spec.train_data.data_dir == ["./train"]
    assert spec.val_data is not None and spec.val_data.data_dir == ["./val"]


def test_legacy_scheduler_lists():
    one = convert_legacy(
        {
            "model": {},
            "optimizer": {
                "optimizer_type": "adamw",
                "learning_rate": [
                    {
                        "scheduler": "Linear",
                        "initial_learning_rate": 0.0,
                        "end_learning_rate": 1.0,
                        "total_iters": 4,
                    }
                ],
            },
        }
    )
    assert one.data["trainer"]["init"]["schedulers"] == [
        {"LinearLR": {"initial_learning_rate": 0.0, "end_learning_rate": 1.0, "total_iters": 4}}
    ]
    chained = convert_legacy(
        {
            "model": {},
            "optimizer": {
                "optimizer_type": "adamw",
                "learning_rate": [
                    {"scheduler": "constant", "learning_rate": 1.0, "main_scheduler": "chained"},
                    {
                        "scheduler": "Exponential",
                        "initial_learning_rate": 1.0,
                        "decay_rate": 0.5,
                        "total_iters": 2,
                        "main_scheduler": "chained",
                    },
                ],
            },
        }
    )
    (sched,) = chained.data["trainer"]["init"]["schedulers"]
    assert list(sched) == ["ChainedScheduler"]
    assert [next(iter(c)) for c in sched["ChainedScheduler"]["schedulers"]] == ["ConstantLR", "ExponentialLR"]


def test_legacy_problem_inside_a_scheduler_points_at_the_legacy_line(tmp_path):
    cfg = tmp_path / "legacy.yaml"
    cfg.write_text(
        LEGACY.replace(
            "  learning_rate: 0.01\n",
            "  learning_rate:\n    - scheduler: Linear\n"
            "      initial_learning_rate: 0.0\n      end_learning_rate: 0.1\n"
            "      total_iters: -5\n",
        )
    )
    line = cfg.read_text().splitlines().index("      total_iters: -5") + 1
    result = validate_file(cfg, check_paths=False)
    assert [p.format() for p in result.errors] == [
        f"{cfg}:{line}:7: optimizer.learning_rate[0].total_iters: must be >= 1, got -5"
    ]


def test_legacy_unknown_top_level_section(tmp_path):
    cfg = tmp_path / "legacy.yaml"
    cfg.write_text(LEGACY + "run_config:\n  x: 1\n")
    result = validate_file(cfg, check_paths=False)
    assert any(
        p.path == "run_config"
        and p.line == LEGACY.count("\n") + 1
        and "did you mean 'runconfig'" in p.message
        for p in result.errors
    )
