"""Every way a conversion can be refused names the key or file, and writes nothing."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from convert_helpers import hf_dirs_fixture
from gptx_testing import run_gptx
from safetensors.torch import load_file, save_file

from gptx_cli.checkpoint import save_checkpoint_dir
from gptx_cli.config.spec import ModelConfig
from gptx_cli.convert.weights_convert import convert_checkpoint
from gptx_cli.errors import CheckpointError, UsageError

hf_dirs = hf_dirs_fixture  # the session-scoped fixture: tiny HF models on disk


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def _edit_single_file(d, edit):
    sd = load_file(d / "model.safetensors")
    edit(sd)
    save_file(sd, d / "model.safetensors", metadata={"format": "pt"})


def _convert(src, out, **kw):
    return convert_checkpoint(src, output_dir=out, progress=False, **kw)


def test_unmatched_hf_key_is_named_with_its_file_and_nothing_is_written(hf_dirs, tmp_path):
    src = _copy(hf_dirs("gptj"), tmp_path / "src")
    _edit_single_file(src, lambda sd: sd.__setitem__("transformer.h.0.attn.rogue.weight", torch.zeros(2)))
    with pytest.raises(
        CheckpointError, match=r"model\.safetensors: unmatched key 'transformer\.h\.0\.attn\.rogue\.weight'"
    ):
        _convert(src, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_drop_unmatched_keys_skips_them_and_reports_them(hf_dirs, tmp_path):
    src = _copy(hf_dirs("gptj"), tmp_path / "src")
    _edit_single_file(src, lambda sd: sd.__setitem__("transformer.h.0.attn.rogue.weight", torch.zeros(2)))
    summary = _convert(src, tmp_path / "out", drop_unmatched_keys=True)
    assert summary.dropped == ["transformer.h.0.attn.rogue.weight"]
    assert "  dropped 1 unmatched source tensor(s): transformer.h.0.attn.rogue.weight" in summary.lines()


def test_hf_non_persistent_buffers_are_not_unmatched(hf_dirs, tmp_path):
    src = _copy(hf_dirs("gptj"), tmp_path / "src")  # old GPT-J checkpoints carry the causal-mask buffers
    _edit_single_file(
        src,
        lambda sd: sd.update(
            {
                "transformer.h.0.attn.bias": torch.ones(1, 1, 4, 4),
                "transformer.h.0.attn.masked_bias": torch.tensor(-1e9),
            }
        ),
    )
    assert _convert(src, tmp_path / "out").dropped == []


def test_missing_key_is_named(hf_dirs, tmp_path):
    src = _copy(hf_dirs("gpt-neox"), tmp_path / "src")
    _edit_single_file(src, lambda sd: sd.pop("gpt_neox.layers.1.mlp.dense_4h_to_h.bias"))
    with pytest.raises(
        CheckpointError, match=r"missing tensor 'gpt_neox\.layers\.1\.mlp\.dense_4h_to_h\.bias'"
    ):
        _convert(src, tmp_path / "out", drop_unmatched_keys=True)  # never droppable


def test_wrong_shape_is_named_with_both_shapes(hf_dirs, tmp_path):
    src = _copy(hf_dirs("gptj"), tmp_path / "src")
    _edit_single_file(
        src, lambda sd: sd.__setitem__("transformer.h.1.mlp.fc_in.weight", torch.zeros(128, 16))
    )
    with pytest.raises(
        CheckpointError,
        match=r"model\.safetensors: tensor 'transformer\.h\.1\.mlp\.fc_in\.weight' has shape \[128, 16\] "
        r"but the gptj model of .*config\.json needs \[128, 32\]",
    ):
        _convert(src, tmp_path / "out")


def test_wrong_family_flag_is_refused(hf_dirs, tmp_path):
    res = run_gptx(
        "convert",
        "checkpoint",
        str(hf_dirs("gptj")),
        "--model",
        "gpt-neox",
        "--output-dir",
        str(tmp_path / "o"),
    )
    assert res.returncode == 1
    assert res.stderr.startswith("error: ") and res.stderr.count("\n") == 1 and "Traceback" not in res.stderr
    assert "config.json: wrong model family: --model gpt-neox but the checkpoint is gptj" in res.stderr
    assert not (tmp_path / "o").exists()


def test_unsupported_model_type_is_wrong_family(hf_dirs, tmp_path):
    src = _copy(hf_dirs("gptj"), tmp_path / "src")
    cfg = json.loads((src / "config.json").read_text())
    (src / "config.json").write_text(
        json.dumps({**cfg, "model_type": "llama", "architectures": ["LlamaForCausalLM"]})
    )
    with pytest.raises(
        CheckpointError,
        match=r"config\.json: wrong model family: model_type 'llama' is not GPT-J or GPT-NeoX",
    ):
        _convert(src, tmp_path / "out")


def test_weights_of_the_other_family_are_unmatched(hf_dirs, tmp_path):
    src = _copy(hf_dirs("gpt-neox"), tmp_path / "src")
    shutil.copy(hf_dirs("gptj") / "config.json", src / "config.json")
    with pytest.raises(
        CheckpointError, match=r"missing tensor 'transformer\.wte\.weight' needed by the gptj model"
    ):
        _convert(src, tmp_path / "out")


def test_gptx_checkpoint_with_foreign_key_or_family(tmp_path):
    cfg = ModelConfig(
        vocab_size=16,
        hidden_size=8,
        num_hidden_layers=1,
        num_heads=2,
        filter_size=16,
        rotary_dim=2,
        share_embedding_weights=False,
        use_projection_bias_in_attention=False,
        use_ffn_bias_in_attention=False,
    )
    from gptx_cli import build_model

    sd = dict(build_model(cfg).state_dict())
    sd["layers.0.adapter.weight"] = torch.zeros(3)
    ckpt = save_checkpoint_dir(tmp_path / "ckpt", sd, cfg, step=1)
    with pytest.raises(
        CheckpointError, match=r"ckpt/model\.safetensors: unmatched key 'layers\.0\.adapter\.weight'"
    ):
        _convert(ckpt, tmp_path / "out")
    with pytest.raises(
        CheckpointError, match=r"gptx\.json: wrong model family: --model gpt-neox but the checkpoint is gptj"
    ):
        _convert(ckpt, tmp_path / "out", model="gpt-neox")
    assert _convert(ckpt, tmp_path / "out", drop_unmatched_keys=True).dropped == ["layers.0.adapter.weight"]


@pytest.mark.parametrize(
    "damage", ["truncate-shard", "garbage-shard", "missing-shard", "bad-index", "bad-config"]
)
def test_corrupt_files_are_named(hf_dirs, tmp_path, damage):
    src = _copy(hf_dirs("gpt-neox", "safetensors-sharded"), tmp_path / "src")
    shard = sorted(src.glob("model-*.safetensors"))[1]
    if damage == "truncate-shard":
        shard.write_bytes(shard.read_bytes()[:-64])
        match = rf"{shard.name}: truncated safetensors file: tensor '.*' ends at byte"
    elif damage == "garbage-shard":
        shard.write_bytes(b"\xff" * 64)
        match = rf"{shard.name}: corrupt safetensors file \(header length"
    elif damage == "missing-shard":
        shard.unlink()
        match = rf"{shard.name}: shard named in .*model\.safetensors\.index\.json is missing"
    elif damage == "bad-index":
        (src / "model.safetensors.index.json").write_text('{"weight_map": ')
        match = r"model\.safetensors\.index\.json: corrupt index file"
    else:
        (src / "config.json").write_text("{not json")
        match = r"config\.json: cannot parse config\.json"
    with pytest.raises(CheckpointError, match=match):
        _convert(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_corrupt_bin_is_named(hf_dirs, tmp_path):
    src = _copy(hf_dirs("gptj", "bin"), tmp_path / "src")
    data = (src / "pytorch_model.bin").read_bytes()
    (src / "pytorch_model.bin").write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError, match=r"pytorch_model\.bin: corrupt or unreadable PyTorch file"):
        _convert(src, tmp_path / "out")


def test_existing_output_is_not_overwritten(hf_dirs, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(UsageError, match="out: output exists and is not empty"):
        _convert(hf_dirs("gptj"), tmp_path / "out")
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"
