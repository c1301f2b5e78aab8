"""A gptx model exported to Hugging Face gives the same logits in transformers (float32, <= 1e-5)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from gptx_testing import REPO, run_gptx, shared_path

from gptx_cli import build_model
from gptx_cli.checkpoint import latest_checkpoint, save_checkpoint_dir
from gptx_cli.config.spec import ModelConfig
from gptx_cli.convert.weights_convert import convert_checkpoint

BASE = dict(
    vocab_size=96,
    hidden_size=32,
    num_hidden_layers=2,
    num_heads=4,
    filter_size=64,
    max_position_embeddings=32,
    embedding_dropout_rate=0.0,
    attention_dropout_rate=0.0,
    residual_dropout_rate=0.0,
)
CONFIGS = {
    "gptj": ModelConfig(
        name="gptj",
        rotary_dim=4,
        use_ffn_bias=True,
        use_bias_in_output=True,
        share_embedding_weights=False,
        use_projection_bias_in_attention=False,
        use_ffn_bias_in_attention=False,
        **BASE,
    ),
    "gpt-neox": ModelConfig(
        name="gpt-neox",
        rotary_dim=2,
        use_untied_layer_norm=True,
        use_projection_bias_in_attention=True,
        use_ffn_bias_in_attention=True,
        use_ffn_bias=True,
        share_embedding_weights=False,
        **BASE,
    ),
    # muP with tied embeddings: the two scales differ, so export unties them.
    "mup": ModelConfig(
        name="gptj",
        rotary_dim=4,
        use_ffn_bias=True,
        use_bias_in_output=True,
        share_embedding_weights=True,
        use_projection_bias_in_attention=False,
        use_ffn_bias_in_attention=False,
        mup_base_hidden_size=16,
        mup_base_filter_size=32,
        embeddings_scale=10.0,
        output_logits_alpha=2.22,
        scale_qk_dot_by_d=True,
        attention_logits_alpha=4.0,
        **BASE,
    ),
}


def _hf_logits(hf_dir: Path, ids: torch.Tensor) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(hf_dir, local_files_only=True, dtype=torch.float32).eval()
    with torch.no_grad():
        return model(ids).logits


@pytest.mark.parametrize("name", list(CONFIGS))
def test_exported_checkpoint_gives_same_logits_in_transformers(tmp_path, name):
    cfg = CONFIGS[name]
    model = build_model(cfg, seed=3).eval()
    with torch.no_grad():  # non-trivial LayerNorms and biases
        for pname, p in model.named_parameters():
            if p.dim() == 1:
                p.normal_(0, 0.3 if pname.endswith("bias") else 1.0)
    ckpt = save_checkpoint_dir(tmp_path / "checkpoint_5", model.state_dict(), cfg, step=5)
    assert ckpt == tmp_path / "checkpoint_5"
    summary = convert_checkpoint(
        tmp_path, output_dir=tmp_path / "hf", progress=False
    )  # a model_dir: its latest
    assert summary.source == ckpt and summary.mup_folded == (name == "mup")
    hf_config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert hf_config["architectures"] == ["GPTJForCausalLM" if cfg.name == "gptj" else "GPTNeoXForCausalLM"]
    ids = torch.randint(0, cfg.vocab_size, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model(ids)
    got = _hf_logits(tmp_path / "hf", ids)
    assert (got - expected).abs().max().item() <= 1e-5


MUP_OVERRIDES = (
    "model.mup_base_hidden_size=32",
    "model.mup_base_filter_size=128",
    "model.embeddings_scale=10.0",
    "model.output_logits_alpha=2.0",
    "model.scale_qk_dot_by_d=true",
    "model.attention_logits_alpha=2.0",
)


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory) -> Path:
    """A few documents preprocessed into HDF5 (msl 32) once for the three training runs."""
    gpt2_tokenizer_dir = shared_path("assets", "tokenizers", "gpt2")
    root = tmp_path_factory.mktemp("corpus")
    docs = root / "docs.jsonl"
    docs.write_text(
        "".join(
            json.dumps({"text": f"document {i} " + "lorem ipsum dolor sit amet " * 8}) + "\n"
            for i in range(48)
        )
    )
    res = run_gptx(
        "preprocess",
        "--input",
        str(docs),
        "--output-dir",
        str(root / "data"),
        "--tokenizer",
        str(gpt2_tokenizer_dir),
        "--max-seq-length",
        "32",
    )
    assert res.returncode == 0, res.stderr
    return root / "data"


@pytest.mark.slow
@pytest.mark.parametrize(
    "config, extra",
    [("tiny_gptj.yaml", ()), ("tiny_neox.yaml", ()), ("tiny_gptj.yaml", MUP_OVERRIDES)],
    ids=["gptj", "gpt-neox", "mup"],
)
def test_model_trained_with_gptx_train_exports_to_same_logits(tmp_path, config, extra, tiny_corpus):
    """End to end: `gptx train` 3 steps on a tiny corpus, export the checkpoint, compare logits."""
    data = tiny_corpus
    model_dir = tmp_path / "model_dir"
    overrides = [
        f"train_dataloader.data_dir={data}",
        "train_dataloader.batch_size=4",
        "loop.max_steps=3",
        "loop.eval_frequency=null",  # no validation set needed
        "checkpoint.steps=3",
        *extra,
    ]
    args = [a for o in overrides for a in ("--override", o)]
    res = run_gptx("train", str(REPO / "configs" / config), "--model-dir", str(model_dir), *args)
    assert res.returncode == 0, res.stderr
    ckpt = latest_checkpoint(model_dir)
    assert ckpt is not None and ckpt.name == "checkpoint_3"
    summary = convert_checkpoint(ckpt, output_dir=tmp_path / "hf", progress=False)
    assert summary.mup_folded == bool(extra)
    from gptx_cli import load_model

    model = load_model(str(ckpt), dtype=torch.float32)
    ids = torch.randint(0, 50257, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model(ids)
    assert (_hf_logits(tmp_path / "hf", ids) - expected).abs().max().item() <= 1e-5


def test_bare_gptx_weights_export_with_a_yaml_config(tmp_path):
    """--config: a weights directory without gptx.json, described by a ModelZoo YAML's model section."""
    import yaml

    from gptx_cli.config.spec import trainer_config_for_model
    from gptx_cli.weights import save_tensors

    cfg = CONFIGS["gpt-neox"]
    model = build_model(cfg, seed=1).eval()
    save_tensors(tmp_path / "weights", model.state_dict().items())
    (tmp_path / "model.yaml").write_text(yaml.safe_dump(trainer_config_for_model(cfg)))
    convert_checkpoint(
        tmp_path / "weights",
        src_fmt="gptx",
        config=tmp_path / "model.yaml",
        output_dir=tmp_path / "hf",
        progress=False,
    )
    ids = torch.arange(10).reshape(1, 10)
    with torch.no_grad():
        assert (_hf_logits(tmp_path / "hf", ids) - model(ids)).abs().max().item() <= 1e-5
