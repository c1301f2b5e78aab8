"""`gptx convert checkpoint --info`: format, family, parameters, dtypes, shapes and step from headers."""

from __future__ import annotations

import json

import torch
from gptx_testing import run_gptx

from gptx_cli.checkpoint import save_checkpoint_dir
from gptx_cli.config.spec import ModelConfig
from gptx_cli.convert.info import checkpoint_info


def test_info_of_a_gptx_checkpoint(tmp_path):
    cfg = ModelConfig(
        name="gpt-neox", vocab_size=10, hidden_size=4, num_hidden_layers=1, num_heads=2, filter_size=8
    )
    sd = {"embed.weight": torch.zeros(10, 4), "layers.0.ln_1.weight": torch.ones(4, dtype=torch.bfloat16)}
    save_checkpoint_dir(tmp_path / "checkpoint_42", sd, cfg, step=42, shard_size_bytes=100)
    res = run_gptx("convert", "checkpoint", "--info", str(tmp_path / "checkpoint_42"))
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert "format:      gptx" in lines and "family:      gpt-neox" in lines and "step:        42" in lines
    assert "parameters:  44 in 2 tensors" in lines
    assert "dtypes:      float32 (40 params), bfloat16 (4 params)" in lines
    assert any(line.split() == ["1", "x", "[10,", "4]", "float32"] for line in lines)
    assert "model-00001-of-00002.safetensors" in res.stdout


def test_info_of_a_sharded_hf_checkpoint(tmp_path):
    from transformers import GPTJConfig, GPTJForCausalLM

    model = GPTJForCausalLM(
        GPTJConfig(vocab_size=64, n_positions=16, n_embd=16, n_layer=2, n_head=2, rotary_dim=4)
    )
    model.save_pretrained(tmp_path, max_shard_size="10KB")
    info = checkpoint_info(tmp_path)
    assert (info["format"], info["family"], info["step"]) == ("hf", "gptj", None)
    assert info["num_parameters"] == sum(p.numel() for p in model.state_dict().values())
    assert info["dtypes"] == {"float32": info["num_parameters"]}
    assert info["files"][0] == "model.safetensors.index.json" and len(info["files"]) > 2


def test_info_reads_headers_only(tmp_path):
    """A 2 GiB tensor in a sparse file: counting it must not read (or allocate) its data."""
    header = json.dumps({"big": {"dtype": "F32", "shape": [1 << 29], "data_offsets": [0, 4 << 29]}}).encode()
    header += b" " * (-len(header) % 8)
    path = tmp_path / "model.safetensors"
    with open(path, "wb") as f:
        f.write(len(header).to_bytes(8, "little") + header)
        f.truncate(8 + len(header) + (4 << 29))
    info = checkpoint_info(path)
    assert info["format"] == "weights" and info["num_parameters"] == 1 << 29
    assert info["largest"] == [("big", [1 << 29], "float32")]
