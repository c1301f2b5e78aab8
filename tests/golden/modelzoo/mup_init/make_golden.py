"""Per-tensor std of ModelZoo 2.10's own freshly initialised muP models (GPT-J and, for the corrected
rule, GPT-2), written to mup_init_std.json. Runs only in the reference venv (DEVELOPERS: build it with
../shared/tools/modelzoo-reference.sh):

    PYTHONPATH=$MZREF_DIR/stubs $MZREF_DIR/venv/bin/python tests/golden/modelzoo/mup_init/make_golden.py

Cases (hidden 64 over a muP base of 16: width_mult 4; filter 256 over 64: filter_mult 4; 2 layers):
- gptj_given:   GPT-J, the config gives all four decoder initializers (as params_gptj_6B_muP.yaml gives
                two): ModelZoo's GPTJModel.__init__ drops scale_initializers_by_dimension's result, so
                none is scaled;
- gptj_default: GPT-J, no initializers given: the default dicts are scaled in place;
- gpt2_given:   GPT-2 with the same given initializers: it assigns the result, so all are scaled (the
                rule `model.mup_scale_all_initializers: true` reproduces).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
SHAPE = dict(
    vocab_size=64,
    hidden_size=64,
    num_heads=4,
    num_hidden_layers=2,
    filter_size=256,
    max_position_embeddings=32,
    mup_base_hidden_size=16,
    mup_base_filter_size=64,
)
GIVEN = {
    "initializer": {"name": "truncated_normal", "mean": 0.0, "std": 1.0, "a": -2.0, "b": 2.0},
    "output_layer_initializer": {"name": "truncated_normal", "mean": 0.0, "std": 0.1, "a": -0.2, "b": 0.2},
    "ffn_initializer": {"name": "normal", "mean": 0.0, "std": 0.5},
    "ffn_output_layer_initializer": {"name": "normal", "mean": 0.0, "std": 0.3},
}
ROLES = {
    "q": "self_attn.proj_q_dense_layer.weight",
    "k": "self_attn.proj_k_dense_layer.weight",
    "v": "self_attn.proj_v_dense_layer.weight",
    "attn_out": "self_attn.proj_output_dense_layer.weight",
    "fc_in": "ffn.ffn.0.linear_layer.weight",
    "fc_out": "ffn.ffn.1.linear_layer.weight",
}


def stds(model: torch.nn.Module) -> dict[str, float]:
    params = dict(model.named_parameters())
    out = {}
    for layer in range(SHAPE["num_hidden_layers"]):
        for role, suffix in ROLES.items():
            (name,) = [n for n in params if n.endswith(f"layers.{layer}.{suffix}")]
            out[f"layers.{layer}.{role}"] = params[name].float().std().item()
    return out


def gptj(initializers: dict) -> dict[str, float]:
    from cerebras.modelzoo.models.nlp.gptj.model import GptjModel, GPTJModelConfig

    cfg = GPTJModelConfig(name="gptj", rotary_dim=4, position_embedding_type="rotary",
                          share_embedding_weights=False, **SHAPE, **initializers)  # fmt: skip
    torch.manual_seed(0)
    return stds(GptjModel(cfg))


def gpt2(initializers: dict) -> dict[str, float]:
    from cerebras.modelzoo.models.nlp.gpt2.model import Gpt2Model, GPT2ModelConfig

    cfg = GPT2ModelConfig(name="gpt2", position_embedding_type="learned", share_embedding_weights=False,
                          **SHAPE, **initializers)  # fmt: skip
    torch.manual_seed(0)
    return stds(Gpt2Model(cfg))


def main() -> None:
    import cerebras.modelzoo as mz

    golden = {
        "modelzoo": (Path(mz.__file__).parents[3] / "COMMIT").read_text().strip()
        if (Path(mz.__file__).parents[3] / "COMMIT").exists()
        else "Release_2.10.0",
        "shape": SHAPE,
        "given": GIVEN,
        "cases": {"gptj_given": gptj(GIVEN), "gptj_default": gptj({}), "gpt2_given": gpt2(GIVEN)},
    }
    (HERE / "mup_init_std.json").write_text(json.dumps(golden, indent=1, sort_keys=True) + "\n")
    print(json.dumps(golden["cases"], indent=1))


if __name__ == "__main__":
    main()
