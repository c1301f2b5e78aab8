"""Issue #19 problem 5: corrupt weights went unnoticed. Checkpoints record an xxh3_64 checksum per weight
file in gptx.json; every load verifies it (one-line error naming the file); --no-verify skips it."""

from __future__ import annotations

import json

import pytest
from gptx_testing import run_gptx

from gptx_cli.checkpoint import read_checkpoint_meta, save_checkpoint_dir
from gptx_cli.config.spec import ModelConfig
from gptx_cli.errors import CheckpointError

CFG = ModelConfig(
    name="gpt-neox", vocab_size=64, hidden_size=16, num_hidden_layers=1, num_heads=2, filter_size=32,
    max_position_embeddings=32,
)  # fmt: skip


@pytest.fixture
def checkpoint(tmp_path):
    from gptx_cli import build_model

    model = build_model(CFG, seed=0)
    return save_checkpoint_dir(tmp_path / "checkpoint_3", model.state_dict(), CFG, step=3)


def _flip(path, offset=None):
    data = bytearray(path.read_bytes())
    i = len(data) // 2 if offset is None else offset
    data[i] ^= 0x01
    path.write_bytes(bytes(data))


def test_checkpoints_record_a_checksum_per_weight_file(checkpoint):
    meta = read_checkpoint_meta(checkpoint)
    assert set(meta["checksums"]) == {"model.safetensors"}
    assert meta["checksums"]["model.safetensors"].startswith("xxh3_64:")


def test_a_flipped_byte_in_the_weights_is_a_one_line_error_naming_the_file(checkpoint, tmp_path):
    from gptx_cli import load_model

    load_model(checkpoint)  # intact: loads
    _flip(checkpoint / "model.safetensors")
    with pytest.raises(CheckpointError, match="model.safetensors: checksum mismatch"):
        load_model(checkpoint)
    r = run_gptx(
        "convert", "checkpoint", str(checkpoint), "--tgt-fmt", "hf", "--output-dir", str(tmp_path / "hf")
    )
    assert r.returncode == 1
    assert r.stderr.startswith(f"error: {checkpoint / 'model.safetensors'}: checksum mismatch"), r.stderr
    assert r.stderr.count("\n") == 1 and "--no-verify" in r.stderr
    assert not (tmp_path / "hf").exists()


def test_no_verify_loads_the_file_anyway(checkpoint, tmp_path):
    _flip(checkpoint / "model.safetensors")
    r = run_gptx(
        "convert",
        "checkpoint",
        str(checkpoint),
        "--tgt-fmt",
        "hf",
        "--output-dir",
        str(tmp_path / "hf"),
        "--no-verify",
    )
    assert r.returncode == 0, r.stderr


def test_a_sharded_checkpoint_verifies_each_shard_and_the_index(tmp_path):
    from gptx_cli import build_model, load_model

    model = build_model(CFG, seed=0)
    ckpt = save_checkpoint_dir(tmp_path / "sharded", model.state_dict(), CFG, step=1, shard_size_bytes=4096)
    recorded = read_checkpoint_meta(ckpt)["checksums"]
    assert "model.safetensors.index.json" in recorded and len(recorded) > 2
    shard = sorted(n for n in recorded if n.endswith(".safetensors"))[-1]
    _flip(ckpt / shard, offset=(ckpt / shard).stat().st_size - 1)
    with pytest.raises(CheckpointError, match=f"{shard}: checksum mismatch"):
        load_model(ckpt)


def test_checkpoints_without_checksums_still_load(checkpoint):
    from gptx_cli import load_model

    meta_path = checkpoint / "gptx.json"
    meta = json.loads(meta_path.read_text())
    del meta["checksums"]
    meta_path.write_text(json.dumps(meta))
    assert load_model(checkpoint) is not None
