"""gptx's decoder computes the same function as transformers' GPT-J and GPT-NeoX (random tiny models)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

from gptx_cli.api import load_model  # noqa: E402
from gptx_cli.errors import CheckpointError  # noqa: E402
from gptx_cli.eval.generate import SamplingConfig, generate_batch  # noqa: E402
from gptx_cli.model.hf import hf_config_from_model_config, model_config_from_hf, to_gptx, to_hf  # noqa: E402
from gptx_cli.model.loss import lm_loss  # noqa: E402
from gptx_cli.model.transformer import Transformer  # noqa: E402
from gptx_cli.weights import open_tensors  # noqa: E402

VOCAB = 211

VARIANTS = {
    "gptj-rot25-gelu_new": ("gptj", dict(n_embd=32, n_head=4, rotary_dim=2, activation_function="gelu_new")),
    "gptj-rot100-gelu-tied": (
        "gptj",
        dict(n_embd=48, n_head=4, rotary_dim=12, activation_function="gelu", tie_word_embeddings=True),
    ),
    "neox-parallel-rot25-bias": (
        "gpt-neox",
        dict(hidden_size=64, num_attention_heads=4, rotary_pct=0.25, hidden_act="gelu", attention_bias=True),
    ),
    "neox-sequential-rot100-nobias-gelu_fast": (
        "gpt-neox",
        dict(
            hidden_size=32,
            num_attention_heads=2,
            rotary_pct=1.0,
            hidden_act="gelu_fast",
            attention_bias=False,
            use_parallel_residual=False,
            rotary_emb_base=500.0,
        ),
    ),
    "neox-parallel-relu-tied": (
        "gpt-neox",
        dict(
            hidden_size=32, num_attention_heads=4, rotary_pct=0.5, hidden_act="relu", tie_word_embeddings=True
        ),
    ),
}


def make_hf(family: str, overrides: dict, seed: int = 0):
    torch.manual_seed(seed)
    if family == "gptj":
        cfg = transformers.GPTJConfig(
            vocab_size=VOCAB, n_layer=2, n_positions=96, bos_token_id=0, eos_token_id=0
        )
        model_cls = transformers.GPTJForCausalLM
    else:
        cfg = transformers.GPTNeoXConfig(
            vocab_size=VOCAB,
            num_hidden_layers=2,
            intermediate_size=96,
            max_position_embeddings=96,
            eos_token_id=0,
        )
        model_cls = transformers.GPTNeoXForCausalLM
    for k, v in overrides.items():
        setattr(cfg, k, v)
    if family == "gpt-neox":  # transformers 5 reads these through rope_parameters
        cfg.rope_parameters = {
            "rope_type": "default",
            "rope_theta": overrides.get("rotary_emb_base", 10000.0),
            "partial_rotary_factor": overrides.get("rotary_pct", 0.25),
        }
    model = model_cls(cfg).eval()
    # Random biases and LayerNorm affine parameters too, so every mapping is exercised.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name or ".ln_" in name:
                p.normal_(0.0 if name.endswith("bias") else 1.0, 0.1)
    return model


def to_gptx_model(hf_model) -> Transformer:
    cfg = model_config_from_hf(hf_model.config.to_dict())
    sd = hf_model.state_dict()
    model = Transformer(cfg).eval()
    model.load_state_dict(dict(to_gptx(cfg, sd.keys(), sd.__getitem__)), strict=True)
    return model


@pytest.fixture(params=list(VARIANTS), scope="module")
def pair(request):
    family, overrides = VARIANTS[request.param]
    hf_model = make_hf(family, overrides)
    return hf_model, to_gptx_model(hf_model)


def test_logits_and_loss_match_hf(pair) -> None:
    hf_model, model = pair
    ids = torch.randint(0, VOCAB, (3, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = hf_model(ids, labels=ids)
        ours = model(ids)
        loss = lm_loss(model, ids[:, :-1], ids[:, 1:], torch.ones_like(ids[:, 1:]))
    assert ours.shape == ref.logits.shape
    assert (ours - ref.logits).abs().max().item() <= 1e-5
    assert abs(loss.loss.item() - ref.loss.item()) <= 1e-6


def test_greedy_continuation_with_kv_cache_matches_hf_generate(pair) -> None:
    hf_model, model = pair
    prompt = torch.randint(0, VOCAB, (2, 6), generator=torch.Generator().manual_seed(2))
    rows = generate_batch(
        model, prompt.tolist(), SamplingConfig(max_new_tokens=32)
    )  # eval/generate's decoder
    ours = torch.cat([prompt, torch.tensor([r.tokens for r in rows])], dim=1)
    ref = hf_model.generate(
        prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=32, min_new_tokens=32, do_sample=False
    )
    assert torch.equal(ours, ref)


def test_hf_dir_round_trip_is_bit_identical_and_loads(tmp_path: Path) -> None:
    for family, overrides in (VARIANTS["gptj-rot25-gelu_new"], VARIANTS["neox-parallel-rot25-bias"]):
        hf_model = make_hf(family, overrides)
        out = tmp_path / family
        hf_model.save_pretrained(out, max_shard_size="20KB")  # sharded, with an index
        assert list(out.glob("*.index.json"))
        src = open_tensors(out)
        cfg = model_config_from_hf(hf_model.config.to_dict())
        gptx_sd = dict(to_gptx(cfg, src.keys(), src.get))
        back = dict(to_hf(cfg, gptx_sd.keys(), gptx_sd.__getitem__, family))
        assert sorted(back) == sorted(src.keys())
        for key, tensor in back.items():
            original = src.get(key)
            assert tensor.dtype == original.dtype and torch.equal(tensor, original), key
        # The exported config.json describes the same model again.
        assert model_config_from_hf(hf_config_from_model_config(cfg, family)) == cfg
        loaded = load_model(out)
        ids = torch.randint(0, VOCAB, (1, 12))
        with torch.no_grad():
            assert (loaded(ids) - hf_model(ids).logits).abs().max().item() <= 1e-5
        assert not loaded.training


def test_gptj_interleaved_rotary_flag_runs_hf_weights_unpermuted() -> None:
    hf_model = make_hf(*VARIANTS["gptj-rot25-gelu_new"])
    cfg = dataclasses.replace(model_config_from_hf(hf_model.config.to_dict()), rotary_interleaved=True)
    sd = hf_model.state_dict()
    model = Transformer(cfg).eval()
    model.load_state_dict(dict(to_gptx(cfg, sd.keys(), sd.__getitem__)))
    q_hf = sd["transformer.h.0.attn.q_proj.weight"]
    assert torch.equal(model.layers[0].attn.qkv.weight[: q_hf.shape[0]], q_hf)
    ids = torch.randint(0, VOCAB, (2, 20))
    with torch.no_grad():
        assert (model(ids) - hf_model(ids).logits).abs().max().item() <= 1e-5


def test_unknown_key_and_wrong_shape_raise_checkpoint_error_naming_the_key() -> None:
    hf_model = make_hf(*VARIANTS["neox-parallel-rot25-bias"])
    cfg = model_config_from_hf(hf_model.config.to_dict())
    sd = dict(hf_model.state_dict())
    sd["gpt_neox.layers.0.attention.rotary_emb.inv_freq"] = torch.ones(2)  # ignored buffer
    sd["gpt_neox.layers.0.mystery.weight"] = torch.ones(2)
    with pytest.raises(CheckpointError, match=r"gpt_neox\.layers\.0\.mystery\.weight"):
        list(to_gptx(cfg, sd.keys(), sd.__getitem__))
    del sd["gpt_neox.layers.0.mystery.weight"]
    sd["gpt_neox.layers.1.mlp.dense_h_to_4h.weight"] = torch.ones(5, 5)
    with pytest.raises(CheckpointError, match=r"gpt_neox\.layers\.1\.mlp\.dense_h_to_4h\.weight"):
        list(to_gptx(cfg, sd.keys(), sd.__getitem__))
