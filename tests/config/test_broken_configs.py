"""Table-driven broken configs: each is invalid (exit 1) with the right line and key path in the message.

Each variant is one textual edit of a real config (configs/tiny_gptj.yaml, or the published legacy
r2.3.1 file for the legacy rows); the expected line is the line of the edited text, found in the
edited file, so the table does not hard-code line numbers that would rot.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from gptx_testing import run_gptx, shared_path

from gptx_cli.commands.validate_config import exit_code, validate_paths

REPO = Path(__file__).resolve().parents[2]
TINY = (REPO / "configs" / "tiny_gptj.yaml").read_text()


@dataclass
class Broken:
    id: str
    old: str
    new: str
    path: str | None  # expected key path in the message (None: YAML syntax errors have none)
    marker: str  # text on the line the error must point at (first occurrence in the edited file)
    message: str  # a fragment of the expected message
    legacy: bool = False


VARIANTS = [
    Broken(
        "unknown-model-key",
        "hidden_size: 64",
        "hidden_sise: 64",
        "trainer.init.model.hidden_sise",
        "hidden_sise",
        "unknown key 'hidden_sise' (did you mean 'hidden_size'?)",
    ),
    Broken(
        "wrong-type-int",
        "hidden_size: 64",
        "hidden_size: big",
        "trainer.init.model.hidden_size",
        "hidden_size: big",
        "expected an integer, got 'big'",
    ),
    Broken(  # a null here once crashed the model's shape rules (found by test_mutations)
        "null-hidden-size",
        "hidden_size: 64",
        "hidden_size: null",
        "trainer.init.model.hidden_size",
        "hidden_size: null",
        "expected an integer, got null",
    ),
    Broken(
        "bad-enum-nonlinearity",
        "nonlinearity: gelu",
        "nonlinearity: gelux",
        "trainer.init.model.nonlinearity",
        "nonlinearity: gelux",
        "(did you mean 'gelu'?)",
    ),
    Broken(
        "heads-do-not-divide",
        "num_heads: 4",
        "num_heads: 5",
        "trainer.init.model.num_heads",
        "num_heads: 5",
        "hidden_size 64 is not divisible by num_heads 5",
    ),
    Broken(
        "odd-rotary-dim",
        "rotary_dim: 4 ",
        "rotary_dim: 3 ",
        "trainer.init.model.rotary_dim",
        "rotary_dim: 3",
        "rotary_dim must be even, got 3",
    ),
    Broken(
        "rotary-dim-above-head-dim",
        "rotary_dim: 4 ",
        "rotary_dim: 32 ",
        "trainer.init.model.rotary_dim",
        "rotary_dim: 32",
        "larger than the head dimension 16",
    ),
    Broken(
        "unsupported-model-name",
        "name: gptj",
        "name: gpt2",
        "trainer.init.model.name",
        "name: gpt2",
        "model 'gpt2' is not supported by gptx (supported: gptj, gpt-neox)",
    ),
    Broken(
        "gpt3-name",
        "name: gptj",
        "name: gpt3",
        "trainer.init.model.name",
        "name: gpt3",
        "model 'gpt3' is not supported by gptx",
    ),
    Broken(
        "cbfloat16-without-dynamic",
        "enabled: false # fp32 on CPU",
        "enabled: true\n      fp16_type: cbfloat16",
        "trainer.init.precision.fp16_type",
        "fp16_type: cbfloat16",
        "fp16_type cbfloat16 requires precision.loss_scaling_factor: dynamic",
    ),
    Broken(
        "unknown-optimizer",
        "AdamW:",
        "AdamX:",
        "trainer.init.optimizer.AdamX",
        "AdamX:",
        "unknown optimizer 'AdamX'",
    ),
    Broken(
        "unsupported-modelzoo-optimizer",
        "AdamW:",
        "Adafactor:",
        "trainer.init.optimizer.Adafactor",
        "Adafactor:",
        "optimizer 'Adafactor' is not supported by gptx (supported: AdamW, Adam, SGD, Lion)",
    ),
    Broken(
        "unsupported-modelzoo-scheduler",
        "- CosineDecayLR:",
        "- CyclicLR:",
        "trainer.init.schedulers[0].SequentialLR.schedulers[1].CyclicLR",
        "CyclicLR",
        "scheduler 'CyclicLR' is not supported by gptx",
    ),
    Broken(
        "unknown-optimizer-key",
        "correct_bias: true",
        "corect_bias: true",
        "trainer.init.optimizer.AdamW.corect_bias",
        "corect_bias",
        "(did you mean 'correct_bias'?)",
    ),
    Broken(
        "unknown-scheduler",
        "- LinearLR:",
        "- LinerLR:",
        "trainer.init.schedulers[0].SequentialLR.schedulers[0].LinerLR",
        "LinerLR",
        "unknown scheduler 'LinerLR' (did you mean 'LinearLR'?)",
    ),
    Broken(
        "scheduler-missing-total-iters",
        "total_iters: 5\n",
        "\n",
        "trainer.init.schedulers[0].SequentialLR.schedulers[0].LinearLR",
        "- LinearLR:",
        "missing required key 'total_iters'",
    ),
    Broken(
        "milestones-count",
        "          schedulers:\n            - LinearLR",
        "          milestones: [5, 3]\n          schedulers:\n            - LinearLR",
        "trainer.init.schedulers[0].SequentialLR.milestones",
        "milestones: [5, 3]",
        "SequentialLR with 2 schedulers needs 1 milestone(s), got 2",
    ),
    Broken(
        "bad-initializer-name",
        "name: truncated_normal",
        "name: truncnorm",
        "trainer.init.model.embedding_initializer.name",
        "name: truncnorm",
        "(did you mean 'truncated_normal'?)",
    ),
    Broken(
        "truncated-normal-a-above-b",
        "a: -0.25",
        "a: 0.5",
        "trainer.init.model.initializer.a",
        "a: 0.5",
        "truncated_normal needs a < b",
    ),
    Broken(
        "data-dir-wrong-type",
        "data_dir: ./language/datasets/tiny/train_msl128/",
        "data_dir: 5",
        "trainer.fit.train_dataloader.data_dir",
        "data_dir: 5",
        "expected a string or a list, got 5",
    ),
    Broken(
        "mup-one-base-size",
        "initializer_range: 0.02",
        "initializer_range: 0.02\n      mup_base_hidden_size: 32",
        "trainer.init.model.mup_base_hidden_size",
        "mup_base_hidden_size",
        "muP needs both base sizes",
    ),
    Broken(
        "learned-positions",
        "position_embedding_type: rotary",
        "position_embedding_type: learned",
        "trainer.init.model.position_embedding_type",
        "position_embedding_type: learned",
        "use rotary",
    ),
    Broken(
        "data-processor-typo",
        "data_processor: GptHDF5MapDataProcessor",
        "data_processor: GptHDF5MapDataProcesor",
        "trainer.fit.train_dataloader.data_processor",
        "GptHDF5MapDataProcesor",
        "(did you mean 'GptHDF5MapDataProcessor'?)",
    ),
    Broken(
        "betas-one-item",
        "betas: [0.9, 0.95]",
        "betas: [0.9]",
        "trainer.init.optimizer.AdamW.betas",
        "betas: [0.9]",
        "needs at least 2 item(s)",
    ),
    Broken(
        "negative-max-steps",
        "max_steps: 50",
        "max_steps: -1",
        "trainer.init.loop.max_steps",
        "max_steps: -1",
        "must be >= 1, got -1",
    ),
    Broken(
        "unknown-strategy",
        "backend_type: CPU",
        "backend_type: CPU\n      strategy: zero3",
        "trainer.init.backend.strategy",
        "strategy: zero3",
        "'zero3' is not one of ddp, fsdp",
    ),
    Broken(
        "unknown-top-level-key",
        "trainer:\n",
        "trainer:\n",
        "extra",
        "extra: 1",
        "unknown top-level key 'extra'",
    ),
    Broken(
        "duplicate-key",
        "      num_heads: 4\n",
        "      num_heads: 4\n      num_heads: 8\n",
        "trainer.init.model.num_heads",
        "num_heads: 8",
        "duplicate key 'num_heads' (first defined at line",
    ),
    Broken("yaml-syntax", "betas: [0.9, 0.95]", "betas: [0.9, 0.95", None, "eps: 1.0e-06", "invalid YAML"),
    Broken(
        "unknown-loop-key",
        "max_steps: 50",
        "max_step: 50",
        "trainer.init.loop.max_step",
        "max_step: 50",
        "(did you mean 'max_steps'?)",
    ),
    Broken(
        "bad-loss-scaling-factor",
        "max_gradient_norm: 1.0",
        "max_gradient_norm: 1.0\n      loss_scaling_factor: dinamic",
        "trainer.init.precision.loss_scaling_factor",
        "dinamic",
        "expected a number or one of dynamic",
    ),
    Broken(
        "training-without-a-length",
        "    loop:\n      max_steps: 50\n",
        "    loop:\n",
        "trainer.fit",
        "  fit:",
        "training needs loop.max_steps or loop.num_steps",
    ),
    Broken(
        "epochs-not-supported",
        "max_steps: 50",
        "max_steps: 50\n      num_epochs: 2",
        "trainer.init.loop.num_epochs",
        "num_epochs: 2",
        "num_epochs is not supported by gptx",
    ),
    Broken(
        "zero-checkpoint-steps",
        "steps: 25",
        "steps: 0",
        "trainer.init.checkpoint.steps",
        "steps: 0",
        "must be >= 1, got 0",
    ),
    Broken(
        "batch-size-string",
        "batch_size: 8\n      shuffle: true",
        "batch_size: '8'\n      shuffle: true",
        "trainer.fit.train_dataloader.batch_size",
        "batch_size: '8'",
        "expected an integer, got '8'",
    ),
    Broken(
        "shuffle-not-bool",
        "shuffle: true",
        "shuffle: yes please",
        "trainer.fit.train_dataloader.shuffle",
        "shuffle: yes please",
        "expected true/false",
    ),
    Broken(
        "unknown-loader-key",
        "data_dir: ./language/datasets/tiny/train_msl128/",
        "data_dirr: ./language/datasets/tiny/train_msl128/",
        "trainer.fit.train_dataloader.data_dirr",
        "data_dirr",
        "(did you mean 'data_dir'?)",
    ),
    Broken(
        "eval-frequency-fraction-above-one",
        "eval_frequency: 25",
        "eval_frequency: 2.5",
        "trainer.init.loop.eval_frequency",
        "eval_frequency: 2.5",
        "must be <= 1, got 2.5",
    ),
    Broken(
        "zero-layer-norm-epsilon",
        "layer_norm_epsilon: 1.0e-05",
        "layer_norm_epsilon: 0",
        "trainer.init.model.layer_norm_epsilon",
        "layer_norm_epsilon: 0",
        "must be > 0",
    ),
    Broken(
        "dropout-above-one",
        "residual_dropout_rate: 0.0",
        "residual_dropout_rate: 1.5",
        "trainer.init.model.residual_dropout_rate",
        "residual_dropout_rate: 1.5",
        "must be <= 1",
    ),
    Broken(
        "misspelled-model-section",
        "    model:\n      name: gptj",
        "    modell:\n      name: gptj",
        "trainer.init.modell",
        "modell:",
        "unknown key 'modell' (did you mean 'model'?)",
    ),
    Broken(
        "loader-vocab-mismatch",
        "batch_size: 8\n      shuffle: true",
        "batch_size: 8\n      vocab_size: 1000\n      shuffle: true",
        "trainer.fit.train_dataloader.vocab_size",
        "vocab_size: 1000",
        "differs from model.vocab_size 50257",
    ),
    Broken(
        "micro-batch-does-not-divide",
        "backend_type: CPU",
        "backend_type: CPU\n      micro_batch_size: 3",
        "trainer.fit.train_dataloader.batch_size",
        "batch_size: 8",
        "not a multiple of backend.micro_batch_size 3",
    ),
    Broken(
        "trainer-not-a-mapping",
        "trainer:\n  init:",
        "trainer: 5\nx:\n  init:",
        "x",
        "x:",
        "unknown top-level key 'x'",
    ),
    # legacy layout (ModelZoo r2.3.1): problems are reported at the legacy keys the user wrote
    Broken(
        "legacy-unknown-runconfig-key",
        "log_steps: 100",
        "log_step: 100",
        "runconfig.log_step",
        "log_step: 100",
        "(did you mean 'log_steps'?)",
        legacy=True,
    ),
    Broken(
        "legacy-model-typo",
        "num_heads: 16",
        "num_head: 16",
        "model.num_head",
        "num_head: 16",
        "(did you mean 'num_heads'?)",
        legacy=True,
    ),
    Broken(
        "legacy-bad-scheduler",
        'scheduler: "CosineDecay"',
        'scheduler: "CosineDekay"',
        "optimizer.learning_rate[1].scheduler",
        "CosineDekay",
        "unknown scheduler 'CosineDekay'",
        legacy=True,
    ),
    Broken(
        "legacy-heads",
        "num_heads: 16",
        "num_heads: 15",
        "model.num_heads",
        "num_heads: 15",
        "hidden_size 4096 is not divisible by num_heads 15",
        legacy=True,
    ),
    Broken(  # a null here once crashed the model's shape rules (found by test_mutations)
        "legacy-null-hidden-size",
        "hidden_size: 4096",
        "hidden_size: null",
        "model.hidden_size",
        "hidden_size: null",
        "expected an integer, got null",
        legacy=True,
    ),
    Broken(
        "legacy-cbfloat16-static-scale",
        'loss_scaling_factor: "dynamic"',
        "loss_scaling_factor: 128.0",
        "model.fp16_type",
        'fp16_type: "cbfloat16"',
        "requires precision.loss_scaling_factor: dynamic",
        legacy=True,
    ),
    Broken(
        "legacy-eval-input-type",
        "batch_size: 120\n    shuffle: False\n    num_workers: 8\n    prefetch_factor: 10\n    persistent_workers: True # Important to avoid seeding at each epoch\n\nmodel",
        "batch_size: many\n    shuffle: False\n    num_workers: 8\n    prefetch_factor: 10\n    persistent_workers: True # Important to avoid seeding at each epoch\n\nmodel",
        "eval_input.batch_size",
        "batch_size: many",
        "expected an integer",
        legacy=True,
    ),
]


def _write(variant: Broken, tmp_path: Path) -> tuple[Path, int]:
    base = (
        shared_path("reference", "modelzoo-configs", "params_gptj_6B_r2.3.1.yaml").read_text()
        if variant.legacy
        else TINY
    )
    assert variant.old in base, f"{variant.id}: edit does not apply"
    text = base.replace(variant.old, variant.new, 1)
    if variant.id == "unknown-top-level-key":
        text += "extra: 1\n"
    path = tmp_path / f"{variant.id}.yaml"
    path.write_text(text)
    line = next(i for i, t in enumerate(text.splitlines(), 1) if variant.marker in t)
    return path, line


def test_the_table_has_at_least_thirty_variants():
    assert len(VARIANTS) >= 30 and len({v.id for v in VARIANTS}) == len(VARIANTS)


@pytest.mark.parametrize("variant", VARIANTS, ids=[v.id for v in VARIANTS])
def test_broken_variant_is_invalid_at_the_right_line_and_key(variant, tmp_path):
    path, line = _write(variant, tmp_path)
    (report,) = validate_paths([path])
    assert exit_code([report]) == 1
    assert report.result is not None
    messages = [p.format() for p in report.result.errors]
    expected_start = f"{path}:{line}:" + ("" if variant.path is None else "")
    hits = [
        m
        for m in messages
        if m.startswith(expected_start)
        and (variant.path is None or f": {variant.path}: " in m)
        and variant.message in m
    ]
    assert hits, f"expected line {line}, path {variant.path}, '{variant.message}'; got {messages}"


def test_cli_reports_every_variant_in_one_json_document(tmp_path):
    written = {variant.id: _write(variant, tmp_path) for variant in VARIANTS}
    res = run_gptx("validate-config", "--format", "json", *[str(p) for p, _ in written.values()], timeout=120)
    assert res.returncode == 1, res.stderr
    assert "Traceback" not in res.stderr
    doc = json.loads(res.stdout)
    by_file = {f["file"]: f for f in doc["files"]}
    for variant in VARIANTS:
        path, line = written[variant.id]
        entry = by_file[str(path)]
        assert entry["valid"] is False, variant.id
        assert any(
            e["line"] == line and (variant.path is None or e["path"] == variant.path) for e in entry["errors"]
        ), (variant.id, entry["errors"])


def test_cli_text_output_is_one_line_per_problem_and_exit_1(tmp_path):
    path, line = _write(VARIANTS[0], tmp_path)
    res = run_gptx("validate-config", str(path))
    assert res.returncode == 1
    first = res.stdout.splitlines()[0]
    assert first == (
        f"{path}:{line}:7: trainer.init.model.hidden_sise: unknown key 'hidden_sise' (did you mean 'hidden_size'?)"
    )
    assert res.stdout.splitlines()[-1].startswith("1 config(s): 0 valid, 1 invalid; 1 error(s)")
