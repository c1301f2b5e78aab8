"""`gptx preprocess --dataset pile` followed by `gptx train configs/params_gptj_6B.yaml` just works: the
recipe writes exactly where the published config reads (here with a tiny model set on the command line)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from datagen import make_pile
from gptx_testing import REPO

pytestmark = pytest.mark.slow

TINY_MODEL = [
    "model.hidden_size=32",
    "model.num_heads=2",
    "model.num_hidden_layers=1",
    "model.filter_size=64",
    "model.rotary_dim=4",
    "train_dataloader.batch_size=1",
    "train_dataloader.num_workers=0",
    "loop.eval_frequency=null",
    "checkpoint.steps=2",
    # cbfloat16 runs as bfloat16 autocast (test_train_cli covers it); on a CPU without bfloat16 units
    # that alone took a minute for these 2 steps of 2 x 2048 tokens through a 50400-word head
    "precision.enabled=false",
]


def test_pile_preprocess_then_published_gptj_config_trains(
    tmp_path: Path, documents: list[str], gptx, tokenizer_env
) -> None:
    make_pile(tmp_path / "pile", [documents * 3, documents * 3], documents)
    res = gptx("preprocess", "--dataset", "pile", "--input-dir", "pile", cwd=tmp_path, env=tokenizer_env)
    assert res.returncode == 0, res.stderr
    config = str(REPO / "configs" / "params_gptj_6B.yaml")
    res = gptx("validate-config", config, "--strict-paths", cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr

    overrides = [a for kv in TINY_MODEL for a in ("--set", kv)]
    res = gptx("train", config, "--max-steps", "2", *overrides, cwd=tmp_path, env=tokenizer_env, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    records = [json.loads(line) for line in (tmp_path / "model_dir" / "metrics.jsonl").open()]
    assert [r["step"] for r in records if r["split"] == "train"][-1] == 2
    assert (tmp_path / "model_dir" / "checkpoint_2" / "model.safetensors").is_file()
