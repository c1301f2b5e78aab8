"""model/counts.py against Hugging Face transformers models built on the meta device (no memory)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from gptx_testing import shared_path
from transformers import GPTJConfig, GPTJForCausalLM, GPTNeoXConfig, GPTNeoXForCausalLM

from gptx_cli.config import load_run_spec
from gptx_cli.config.spec import ModelConfig, PrecisionSpec
from gptx_cli.model.counts import count_parameters, flops_per_token, memory_estimate, parameter_counts

REPO = Path(__file__).resolve().parents[2]
PUBLISHED = [
    "params_gptj_6B.yaml",
    "params_gptj_6B_muP.yaml",
    "params_gptj_6B_TRC2.yaml",
    "params_gpt_neox_20B.yaml",
]


def hf_parameter_count(cfg: ModelConfig) -> int:
    """Parameters of the equivalent transformers model, built on the meta device."""
    if cfg.use_untied_layer_norm:  # GPT-NeoX block
        # HF NeoX: attention biases follow attention_bias, MLP biases always, no LM-head bias.
        assert cfg.use_projection_bias_in_attention == cfg.use_ffn_bias_in_attention and cfg.use_ffn_bias
        assert not cfg.use_bias_in_output
        hf = GPTNeoXConfig(
            vocab_size=cfg.vocab_size,
            hidden_size=cfg.hidden_size,
            num_hidden_layers=cfg.num_hidden_layers,
            num_attention_heads=cfg.num_heads,
            intermediate_size=cfg.filter_size,
            max_position_embeddings=cfg.max_position_embeddings,
            rotary_pct=cfg.resolved_rotary_dim / cfg.head_dim,
            attention_bias=cfg.use_projection_bias_in_attention,
            tie_word_embeddings=cfg.share_embedding_weights,
        )
        model_cls = GPTNeoXForCausalLM
    else:  # GPT-J block: no attention biases, MLP biases, LM head with bias
        assert not cfg.use_projection_bias_in_attention and not cfg.use_ffn_bias_in_attention
        assert cfg.use_ffn_bias and cfg.use_bias_in_output
        hf = GPTJConfig(
            vocab_size=cfg.vocab_size,
            n_positions=cfg.max_position_embeddings,
            n_embd=cfg.hidden_size,
            n_layer=cfg.num_hidden_layers,
            n_head=cfg.num_heads,
            rotary_dim=cfg.resolved_rotary_dim,
            n_inner=cfg.filter_size,
            tie_word_embeddings=cfg.share_embedding_weights,
        )
        model_cls = GPTJForCausalLM
    with torch.device("meta"):
        model = model_cls(hf)
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", PUBLISHED)
def test_published_configs_count_like_transformers(name):
    spec = load_run_spec(shared_path("reference", "modelzoo-configs", name))
    assert count_parameters(spec.model) == hf_parameter_count(spec.model)


@pytest.mark.parametrize(
    "name, vocab, expected",
    [
        ("params_gptj_6B_TRC2.yaml", 50400, 6_050_882_784),
        ("params_gptj_6B.yaml", 50257, 6_049_711_185),
        ("params_gpt_neox_20B.yaml", 50432, 20_554_567_680),
        ("params_gpt_neox_20B.yaml", 50277, 20_552_663_040),
    ],
)
def test_reference_counts_from_the_issue(name, vocab, expected):
    cfg = dataclasses.replace(load_run_spec(REPO / "configs" / name).model, vocab_size=vocab)
    assert count_parameters(cfg) == expected == hf_parameter_count(cfg)


@pytest.mark.parametrize("name", ["tiny_gptj.yaml", "tiny_neox.yaml"])
@pytest.mark.parametrize("tied", [False, True])
def test_tiny_configs_tied_and_untied_count_like_transformers(name, tied):
    cfg = load_run_spec(REPO / "configs" / name).model
    cfg = dataclasses.replace(cfg, share_embedding_weights=tied, vocab_size=1000)
    assert count_parameters(cfg) == hf_parameter_count(cfg)


def test_parts_add_up_and_tied_head_costs_only_its_bias():
    cfg = load_run_spec(REPO / "configs" / "tiny_gptj.yaml").model
    parts = parameter_counts(cfg)
    assert parts["total"] == sum(v for k, v in parts.items() if k != "total")
    tied = parameter_counts(dataclasses.replace(cfg, share_embedding_weights=True))
    assert tied["lm_head"] == cfg.vocab_size  # the output bias only


def test_flops_per_token_is_palm_formula():
    cfg = load_run_spec(REPO / "configs" / "tiny_neox.yaml").model
    n = count_parameters(cfg)
    # 6N + 12 * layers * heads * head_dim * seq_len
    assert flops_per_token(cfg, 128) == 6 * n + 12 * 2 * 4 * 16 * 128
    assert flops_per_token(cfg, 256) - flops_per_token(cfg, 128) == 12 * 2 * 4 * 16 * 128


def test_memory_estimate_parts():
    cfg = load_run_spec(REPO / "configs" / "params_gptj_6B.yaml").model
    n = count_parameters(cfg)
    bf16 = PrecisionSpec(enabled=True, fp16_type="bfloat16")
    mem = memory_estimate(cfg, 1, 2048, bf16)
    assert (mem["weights"], mem["grads"], mem["optimizer_state"]) == (4 * n, 4 * n, 8 * n)
    assert mem["total"] == mem["weights"] + mem["grads"] + mem["optimizer_state"] + mem["activations"]
    assert memory_estimate(cfg, 1, 2048, bf16, optimizer="SGD")["optimizer_state"] == 4 * n
    fp32 = memory_estimate(cfg, 1, 2048, None)["activations"]
    assert fp32 > mem["activations"]  # fp32 activations take more than autocast ones
    ckpt = memory_estimate(cfg, 1, 2048, bf16, activation_checkpointing=True)["activations"]
    assert ckpt < mem["activations"] / 4
    assert memory_estimate(cfg, 4, 2048, bf16)["activations"] > 3.5 * mem["activations"]


def test_activation_estimate_is_an_upper_bound_of_a_real_tiny_training_step():
    """The estimate must not undershoot what autograd keeps for the backward pass (HF eager GPT-J, fp32)."""
    cfg = dataclasses.replace(load_run_spec(REPO / "configs" / "tiny_gptj.yaml").model, vocab_size=512)
    hf = GPTJConfig(
        vocab_size=cfg.vocab_size,
        n_positions=cfg.max_position_embeddings,
        n_embd=cfg.hidden_size,
        n_layer=cfg.num_hidden_layers,
        n_head=cfg.num_heads,
        rotary_dim=cfg.resolved_rotary_dim,
        n_inner=cfg.filter_size,
        attn_implementation="eager",
        bos_token_id=0,
        eos_token_id=0,
    )
    torch.manual_seed(0)
    model = GPTJForCausalLM(hf)
    weights = {p.data_ptr() for p in model.parameters()}
    saved: dict[tuple[int, int], int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.data_ptr() not in weights:  # weights are counted separately; a tensor saved twice is kept once
            saved[(t.data_ptr(), t.numel())] = t.numel() * t.element_size()
        return t

    batch, seq = 2, 128
    ids = torch.randint(0, cfg.vocab_size, (batch, seq))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(ids, labels=ids)
    actual = sum(saved.values())
    estimate = memory_estimate(cfg, batch, seq, None)["activations"]
    assert actual <= estimate < 3 * actual
