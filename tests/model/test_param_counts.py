"""Parameter counts of the four published ModelZoo configs: the gptx module equals Hugging Face's."""

from __future__ import annotations

import dataclasses

import pytest
import torch

transformers = pytest.importorskip("transformers")

from gptx_cli.config import load_run_spec  # noqa: E402
from gptx_cli.model.hf import hf_config_from_model_config  # noqa: E402
from gptx_cli.model.transformer import Transformer  # noqa: E402

CONFIGS = [
    "params_gptj_6B.yaml",
    "params_gptj_6B_muP.yaml",
    "params_gptj_6B_TRC2.yaml",
    "params_gpt_neox_20B.yaml",
]


def meta_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())  # shared (tied) tensors count once


@pytest.mark.parametrize("name", CONFIGS)
def test_published_config_parameter_count_equals_hugging_face(modelzoo_configs_dir, name: str) -> None:
    cfg = load_run_spec(modelzoo_configs_dir / name).model
    with torch.device("meta"):
        ours = meta_count(Transformer(cfg))
    # muP multipliers change no shapes; HF cannot express them, so compare the same shapes without.
    plain = dataclasses.replace(
        cfg,
        mup_base_hidden_size=None,
        mup_base_filter_size=None,
        embeddings_scale=1.0,
        scale_qk_dot_by_d=False,
        attention_logits_alpha=1.0,
    )
    family = "gpt-neox" if cfg.use_untied_layer_norm else "gptj"
    hf_json = hf_config_from_model_config(plain, family)
    config_cls, model_cls = (
        (transformers.GPTJConfig, transformers.GPTJForCausalLM)
        if family == "gptj"
        else (transformers.GPTNeoXConfig, transformers.GPTNeoXForCausalLM)
    )
    hf_cfg = config_cls(**{k: v for k, v in hf_json.items() if k not in ("architectures", "model_type")})
    with torch.device("meta"):
        reference = meta_count(model_cls(hf_cfg))
    assert ours == reference
    expected = {"gpt-neox": 20_55, "gptj": 6_05}[family]  # billions x 100, rounded: a sanity anchor
    assert round(ours / 1e7) == pytest.approx(expected, abs=3)
