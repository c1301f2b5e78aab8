"""checkpoint.py: the gptx checkpoint directory: atomic save, metadata, finding the latest."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from gptx_cli.checkpoint import (
    is_gptx_checkpoint,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint_state_dict,
    read_checkpoint_meta,
    read_model_config,
    save_checkpoint_dir,
)
from gptx_cli.config.spec import ModelConfig
from gptx_cli.errors import CheckpointError

CFG = ModelConfig(vocab_size=32, hidden_size=8, num_hidden_layers=1, num_heads=2, filter_size=16)


def _state() -> dict[str, torch.Tensor]:
    return {"embedding.weight": torch.randn(32, 8), "final_norm.weight": torch.ones(8)}


def test_save_writes_meta_config_and_weights(tmp_path):
    sd = _state()
    extra_seen = []
    out = save_checkpoint_dir(
        tmp_path / "checkpoint_7",
        sd,
        CFG,
        step=7,
        tokenizer="gpt2",
        extra={"note": "x"},
        write_extra_files=lambda d: extra_seen.append((d / "train_state.pt").write_text("s")),
    )
    assert sorted(p.name for p in out.iterdir()) == [
        "config.yaml",
        "gptx.json",
        "model.safetensors",
        "train_state.pt",
    ]
    meta = read_checkpoint_meta(out)
    assert meta["step"] == 7 and meta["tokenizer"] == "gpt2"
    assert meta["dtype"] == "float32" and meta["note"] == "x" and meta["num_parameters"] == 32 * 8 + 8
    assert read_model_config(out) == CFG
    assert yaml.safe_load((out / "config.yaml").read_text())["trainer"]["init"]["model"]["hidden_size"] == 8
    loaded = load_checkpoint_state_dict(out)
    assert all(torch.equal(loaded[k], v) for k, v in sd.items())
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint_7"]


def test_save_streams_generator_into_shards(tmp_path):
    sd = _state()
    out = save_checkpoint_dir(tmp_path / "c", iter(sd.items()), CFG, step=1, shard_size_bytes=64)
    assert (out / "model.safetensors.index.json").is_file()
    assert all(torch.equal(load_checkpoint_state_dict(out)[k], v) for k, v in sd.items())


def test_failed_save_leaves_previous_checkpoint_and_no_temp(tmp_path):
    save_checkpoint_dir(tmp_path / "checkpoint_1", _state(), CFG, step=1)

    def crash(_d):
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        save_checkpoint_dir(tmp_path / "checkpoint_2", _state(), CFG, step=2, write_extra_files=crash)
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint_1"]
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoint_1"


def test_latest_by_step_skips_incomplete_and_foreign_dirs(tmp_path):
    for step in (2, 10, 9):
        save_checkpoint_dir(tmp_path / f"checkpoint_{step}", _state(), CFG, step=step)
    (tmp_path / "checkpoint_20.tmp-123").mkdir()
    (tmp_path / "checkpoint_30").mkdir()  # no gptx.json: a crash before rename never leaves this, but be safe
    assert [s for s, _ in list_checkpoints(tmp_path)] == [2, 9, 10]
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoint_10"
    assert latest_checkpoint(tmp_path / "nope") is None
    assert not is_gptx_checkpoint(tmp_path / "checkpoint_30")


def test_resave_same_path_replaces(tmp_path):
    save_checkpoint_dir(tmp_path / "c", _state(), CFG, step=1)
    save_checkpoint_dir(tmp_path / "c", _state(), CFG, step=2)
    assert read_checkpoint_meta(tmp_path / "c")["step"] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["c"]


def test_bad_meta_is_named(tmp_path):
    (tmp_path / "gptx.json").write_text("{oops")
    with pytest.raises(CheckpointError, match=r"gptx\.json: corrupt checkpoint metadata"):
        read_checkpoint_meta(tmp_path)
    (tmp_path / "gptx.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(CheckpointError, match="not a gptx checkpoint"):
        read_checkpoint_meta(tmp_path)
    with pytest.raises(CheckpointError, match=r"not a gptx checkpoint \(no gptx\.json\)"):
        read_checkpoint_meta(tmp_path / "missing")


def test_resolve_opens_a_checkpoint_a_model_dir_and_a_hugging_face_dir(tmp_path):
    from gptx_cli.checkpoint import resolve
    from gptx_cli.model.hf import hf_config_from_model_config, model_config_from_hf, to_hf
    from gptx_cli.model.init import init_model
    from gptx_cli.weights import save_tensors

    small = ModelConfig(
        name="gptj",
        use_projection_bias_in_attention=False,  # GPT-J has none (ModelZoo's default has them)
        use_ffn_bias_in_attention=False,
        vocab_size=32,
        hidden_size=16,
        num_hidden_layers=1,
        num_heads=2,
        filter_size=32,
        rotary_dim=4,
    )
    hf_config = hf_config_from_model_config(small, "gptj")
    cfg = model_config_from_hf(hf_config)  # what Hugging Face can express
    model = init_model(cfg, seed=1)
    sd = model.state_dict()
    for step in (3, 5):
        save_checkpoint_dir(tmp_path / "md" / f"checkpoint_{step}", sd, cfg, step=step, tokenizer="gpt2")
    one = resolve(tmp_path / "md" / "checkpoint_3")
    assert (one.kind, one.step, one.config, one.tokenizer) == ("checkpoint", 3, cfg, "gpt2")
    latest = resolve(tmp_path / "md")
    assert (latest.kind, latest.directory, latest.step) == ("model_dir", tmp_path / "md" / "checkpoint_5", 5)

    hf = tmp_path / "hf"
    save_tensors(hf, to_hf(cfg, list(sd), sd.__getitem__, "gptj"))
    (hf / "config.json").write_text(json.dumps(hf_config))
    src = resolve(hf)
    assert (src.kind, src.step, src.config, src.tokenizer) == ("hf", None, cfg, None)
    with src.open_weights() as tensors:  # one tensor at a time, in gptx names
        assert all(torch.equal(t, sd[name]) for name, t in tensors)
    ids = torch.randint(0, 32, (1, 6))
    with torch.no_grad():
        assert torch.equal(src.load_model()(ids), model.eval()(ids))

    with pytest.raises(CheckpointError, match="no such file"):
        resolve(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="not a model directory"):
        resolve(tmp_path / "empty")
