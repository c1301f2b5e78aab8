"""HF -> gptx -> HF gives back bit-identical tensors and the identical config.json."""

from __future__ import annotations

import shutil

import pytest
import torch
from convert_helpers import STORAGES, hf_dirs_fixture
from gptx_testing import run_gptx

from gptx_cli.checkpoint import read_checkpoint_meta
from gptx_cli.convert.weights_convert import convert_checkpoint
from gptx_cli.weights import open_tensors

hf_dirs = hf_dirs_fixture  # the session-scoped fixture: tiny HF models on disk


def _tensors(path) -> dict[str, torch.Tensor]:
    with open_tensors(path) as src:
        return dict(src.items())


@pytest.mark.parametrize("storage", STORAGES)
@pytest.mark.parametrize("family", ["gptj", "gpt-neox"])
def test_hf_gptx_hf_round_trip_is_bit_identical(hf_dirs, tmp_path, family, storage):
    src = hf_dirs(family, storage)
    gptx_dir = tmp_path / "gptx"
    back = tmp_path / "back"
    s1 = convert_checkpoint(src, output_dir=gptx_dir, progress=False)
    assert (s1.src_fmt, s1.tgt_fmt, s1.family) == ("hf", "gptx", family)
    assert read_checkpoint_meta(gptx_dir)["model"]["name"] == family
    convert_checkpoint(gptx_dir, output_dir=back, shard_size="8KB", progress=False)

    original, returned = _tensors(src), _tensors(back)
    assert sorted(returned) == sorted(original)
    for name, t in original.items():
        assert returned[name].dtype == t.dtype and torch.equal(returned[name], t), name
    assert (back / "config.json").read_bytes() == (src / "config.json").read_bytes()
    assert (back / "model.safetensors.index.json").is_file()  # 8KB shards: several files and an index


def test_cli_conversion_with_dtype_then_back_with_sharding(hf_dirs, tmp_path):
    src = hf_dirs("gpt-neox", "safetensors-sharded")
    res = run_gptx(
        "convert",
        "checkpoint",
        str(src),
        "--src-fmt",
        "hf",
        "--tgt-fmt",
        "gptx",
        "--output-dir",
        str(tmp_path / "g"),
        "--dtype",
        "bfloat16",
        "--shard-size",
        "10KB",
    )
    assert res.returncode == 0, res.stderr
    assert "converted" in res.stdout and "bfloat16" in res.stdout
    assert (tmp_path / "g" / "model.safetensors.index.json").is_file()
    summary = convert_checkpoint(
        tmp_path / "g", output_dir=tmp_path / "hf", shard_size="10KB", progress=False
    )
    assert (summary.src_fmt, summary.tgt_fmt, summary.dtype) == ("gptx", "hf", "bfloat16")
    assert "model.safetensors.index.json" in summary.files
    original, returned = _tensors(src), _tensors(tmp_path / "hf")
    assert sorted(original) == sorted(returned)
    for name, t in original.items():
        assert returned[name].dtype == torch.bfloat16 and torch.equal(returned[name], t.to(torch.bfloat16)), (
            name
        )
    assert '"dtype": "bfloat16"' in (tmp_path / "hf" / "config.json").read_text()


def test_neox_head_named_lm_head_is_accepted(hf_dirs, tmp_path):
    """transformers >= 5 modules call the NeoX head lm_head; published files say embed_out."""
    from safetensors.torch import load_file, save_file

    src = tmp_path / "src"
    shutil.copytree(hf_dirs("gpt-neox"), src)
    sd = load_file(src / "model.safetensors")
    sd["lm_head.weight"] = sd.pop("embed_out.weight")
    save_file(sd, src / "model.safetensors", metadata={"format": "pt"})
    convert_checkpoint(src, output_dir=tmp_path / "g", progress=False)
    convert_checkpoint(tmp_path / "g", output_dir=tmp_path / "back", progress=False)
    assert torch.equal(_tensors(tmp_path / "back")["embed_out.weight"], sd["lm_head.weight"])
