"""`gptx continue-pretrain`: weights only, from a Hugging Face directory or a gptx checkpoint."""

from __future__ import annotations

import pytest
import torch
from train_helpers import REPO, read_metrics, run_gptx, tiny_args

pytestmark = pytest.mark.slow


@pytest.fixture
def hf_gptj_dir(tiny_data, tmp_path):
    """A tiny random GPT-J saved by transformers, with the tiny data's vocabulary."""
    from transformers import GPTJConfig, GPTJForCausalLM

    torch.manual_seed(0)
    cfg = GPTJConfig(
        vocab_size=tiny_data["vocab_size"], n_positions=128, n_embd=32, n_layer=2, n_head=2, rotary_dim=4,
        n_inner=64, activation_function="gelu_new", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        tie_word_embeddings=False,
    )  # fmt: skip
    model = GPTJForCausalLM(cfg).eval()
    path = tmp_path / "hf_gptj"
    model.save_pretrained(path)
    return path, model


def first_batch(tiny_data, model_dir):
    from gptx_cli.config import load_run_spec
    from gptx_cli.data.loader import build_dataloader

    args = tiny_args(tiny_data, model_dir)
    overrides = [args[i + 1] for i, a in enumerate(args) if a == "--set"]
    spec = load_run_spec(REPO / "configs" / "tiny_gptj.yaml", overrides=overrides)
    return next(iter(build_dataloader(spec.train_data)))


def test_continue_pretrain_from_hf_starts_at_the_hf_models_loss(tiny_data, hf_gptj_dir, tmp_path):
    path, hf_model = hf_gptj_dir
    model_dir = tmp_path / "cpt"
    batch = first_batch(tiny_data, model_dir)
    with torch.no_grad():
        logits = hf_model(batch["input_ids"]).logits.float()
    ce = torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch["labels"].flatten(), reduction="none")
    mask = batch["attention_mask"].flatten().float()
    expected = float((ce * mask).sum() / mask.sum())

    r = run_gptx(
        "continue-pretrain", *tiny_args(tiny_data, model_dir, "--set", "model.nonlinearity=gelu_new",
                                        "--max-steps", "2"),
        "--checkpoint-path", str(path),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "training steps 0..2" in r.stdout
    losses = read_metrics(model_dir)
    assert losses[1]["loss"] == pytest.approx(expected, abs=1e-4)
    assert losses[1]["lr"] == 0.0  # a fresh schedule: warm-up from 0


def test_continue_pretrain_rejects_a_vocabulary_mismatch(tiny_data, hf_gptj_dir, tmp_path):
    path, _ = hf_gptj_dir
    r = run_gptx(
        "continue-pretrain",
        *tiny_args(tiny_data, tmp_path / "md", "--set", f"model.vocab_size={tiny_data['vocab_size'] + 7}"),
        "--checkpoint-path", str(path),
    )  # fmt: skip
    assert r.returncode == 1
    assert "vocab_size" in r.stderr and "Traceback" not in r.stderr
    assert "\n" not in r.stderr.strip()
    # the config keeps ModelZoo's exact gelu while the HF model used the tanh approximation: said, not hidden
    assert "model.nonlinearity='gelu_new'; training uses the config's 'gelu'" in r.stdout
