"""Tiny random Hugging Face GPT-J / GPT-NeoX checkpoints on disk, in every storage layout gptx reads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

STORAGES = ("safetensors", "safetensors-sharded", "bin", "bin-sharded")


def tiny_hf_model(family: str, **overrides):
    """A randomly initialised transformers model with a few thousand parameters (seeded)."""
    from transformers import GPTJConfig, GPTJForCausalLM, GPTNeoXConfig, GPTNeoXForCausalLM

    torch.manual_seed(0)
    if family == "gptj":
        kw = dict(
            vocab_size=64,
            n_positions=32,
            n_embd=32,
            n_layer=2,
            n_head=4,
            rotary_dim=4,
            bos_token_id=1,
            eos_token_id=2,
        )
        kw.update(overrides)
        model = GPTJForCausalLM(GPTJConfig(**kw))
    else:
        kw = dict(
            vocab_size=64,
            max_position_embeddings=32,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            rotary_pct=0.5,
            bos_token_id=1,
            eos_token_id=2,
        )
        kw.update(overrides)
        model = GPTNeoXForCausalLM(GPTNeoXConfig(**kw))
    # Random LayerNorm and bias values, so a swapped or dropped tensor cannot go unnoticed.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.normal_(0, 0.5 if name.endswith("bias") else 1.0)
    return model.eval()


def save_hf(model, out: Path, storage: str) -> Path:
    """Save `model` as transformers would (config.json, generation_config.json) with the given weights layout."""
    out.mkdir(parents=True)
    if storage.startswith("safetensors"):
        model.save_pretrained(out, max_shard_size="20KB" if storage.endswith("sharded") else "5GB")
        return out
    model.save_pretrained(out)  # for config.json / generation_config.json
    for p in list(out.glob("*.safetensors")) + list(out.glob("*.index.json")):
        p.unlink()
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    if "gpt_neox.embed_in.weight" in sd:  # published NeoX checkpoints (and save_pretrained) say embed_out
        sd["embed_out.weight"] = sd.pop("lm_head.weight")
    if storage == "bin":
        torch.save(sd, out / "pytorch_model.bin")
        return out
    names = list(sd)
    half = len(names) // 2
    files = {
        "pytorch_model-00001-of-00002.bin": names[:half],
        "pytorch_model-00002-of-00002.bin": names[half:],
    }
    weight_map = {}
    for fname, keys in files.items():
        torch.save({k: sd[k] for k in keys}, out / fname)
        weight_map.update({k: fname for k in keys})
    index = {
        "metadata": {"total_size": sum(t.numel() * t.element_size() for t in sd.values())},
        "weight_map": weight_map,
    }
    (out / "pytorch_model.bin.index.json").write_text(json.dumps(index))
    return out


@pytest.fixture(scope="session")
def hf_dirs_fixture(tmp_path_factory):
    """(family, storage) -> saved HF model directory; built once per session."""
    root = tmp_path_factory.mktemp("hf")
    cache: dict[tuple[str, str], Path] = {}

    def get(family: str, storage: str = "safetensors") -> Path:
        key = (family, storage)
        if key not in cache:
            cache[key] = save_hf(tiny_hf_model(family), root / f"{family}-{storage}", storage)
        return cache[key]

    return get
