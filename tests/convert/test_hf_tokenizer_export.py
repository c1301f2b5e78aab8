"""Issue #19 problem 9: the HF export had no tokenizer, so AutoTokenizer "loaded" a 2-token tokenizer
that encoded text to []. The export now carries tokenizer.json and the files transformers reads."""

from __future__ import annotations

import json

import pytest
from gptx_testing import run_gptx

from gptx_cli import build_model
from gptx_cli.checkpoint import save_checkpoint_dir
from gptx_cli.config.spec import ModelConfig

TEXTS = ["Hello world, this is gptx.", "  leading spaces\nand a newline", "ünïcödé 123 <|endoftext|>"]


def _checkpoint(tmp_path, vocab_size, tokenizer):
    cfg = ModelConfig(
        name="gpt-neox", vocab_size=vocab_size, hidden_size=8, num_hidden_layers=1, num_heads=2,
        filter_size=16, max_position_embeddings=32, rotary_dim=2,
    )  # fmt: skip
    model = build_model(cfg, seed=0)
    return save_checkpoint_dir(
        tmp_path / "checkpoint_1", model.state_dict(), cfg, step=1, tokenizer=tokenizer
    )


def test_the_hf_export_loads_with_autotokenizer_and_encodes_like_gptx(tmp_path, neox_tokenizer_json):
    from transformers import AutoTokenizer

    from gptx_cli.data.tokenizer import load_tokenizer

    ckpt = _checkpoint(tmp_path, 50304, str(neox_tokenizer_json))
    assert (ckpt / "tokenizer.json").is_file()
    r = run_gptx("convert", "checkpoint", str(ckpt), "--tgt-fmt", "hf", "--output-dir", str(tmp_path / "hf"))
    assert r.returncode == 0, r.stderr
    assert "warning" not in r.stderr
    hf = AutoTokenizer.from_pretrained(str(tmp_path / "hf"))
    ours = load_tokenizer(neox_tokenizer_json)
    for text in TEXTS:
        assert hf(text, add_special_tokens=False)["input_ids"] == ours.encode(text)
        assert hf.decode(ours.encode(text)) == ours.decode(ours.encode(text))
    assert hf.eos_token_id == ours.eos_id
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["eos_token_id"] == ours.eos_id


def test_an_export_without_a_recorded_tokenizer_says_so(tmp_path):
    ckpt = _checkpoint(tmp_path, 64, None)
    r = run_gptx("convert", "checkpoint", str(ckpt), "--tgt-fmt", "hf", "--output-dir", str(tmp_path / "hf"))
    assert r.returncode == 0, r.stderr
    assert "warning:" in r.stderr and "records no tokenizer" in r.stderr
    assert not (tmp_path / "hf" / "tokenizer.json").exists()


def test_generate_with_a_tokenizer_larger_than_the_model_is_a_named_error(tmp_path, neox_tokenizer_json):
    """`gptx generate --tokenizer neox-20b` on a small-vocab model ended in 'internal error: IndexError'."""
    ckpt = _checkpoint(tmp_path, 64, None)
    r = run_gptx(
        "generate", "--checkpoint-path", str(ckpt), "--tokenizer", str(neox_tokenizer_json),
        "--prompt", "Hello world", "--max-new-tokens", "2",
    )  # fmt: skip
    assert r.returncode == 2
    assert "is outside the model's vocabulary of 64" in r.stderr and "internal error" not in r.stderr
    assert r.stderr.count("\n") == 1


@pytest.mark.parametrize("existing", ["config.json"])
def test_convert_config_does_not_overwrite_an_existing_hf_config(tmp_path, existing):
    """Problem 8: `convert config --output-dir <existing HF dir>` replaced its config.json."""
    from gptx_testing import REPO

    out = tmp_path / "hf"
    out.mkdir()
    (out / existing).write_text('{"mine": true}\n')
    args = [
        "convert",
        "config",
        str(REPO / "configs" / "tiny_neox.yaml"),
        "--src-fmt",
        "trainer",
        "--tgt-fmt",
        "hf",
    ]
    r = run_gptx(*args, "--output-dir", str(out))
    assert r.returncode == 2 and "already exists" in r.stderr and "--overwrite" in r.stderr
    assert (out / existing).read_text() == '{"mine": true}\n'
    r = run_gptx(*args, "--output-dir", str(out), "--overwrite")
    assert r.returncode == 0, r.stderr
    assert "mine" not in (out / existing).read_text()
