"""Both muP initialisation rules against ModelZoo 2.10's own models (per-tensor std of a fresh init,
tests/golden/modelzoo/mup_init/mup_init_std.json, made by make_golden.py beside it): gptx's default is
ModelZoo GPT-J's (the initializers a config gives are not scaled; the defaults are), and
`mup_scale_all_initializers: true` is ModelZoo GPT-2's (every initializer scaled)."""

from __future__ import annotations

import dataclasses
import json

import pytest
from gptx_testing import REPO, TINY

from gptx_cli.model.init import init_model

GOLDEN = json.loads((REPO / "tests" / "golden" / "modelzoo" / "mup_init" / "mup_init_std.json").read_text())


def _gptx_stds(**changes) -> dict[str, float]:
    shape = GOLDEN["shape"]
    cfg = dataclasses.replace(
        TINY,
        vocab_size=shape["vocab_size"],
        hidden_size=shape["hidden_size"],
        num_heads=shape["num_heads"],
        num_hidden_layers=shape["num_hidden_layers"],
        filter_size=shape["filter_size"],
        max_position_embeddings=shape["max_position_embeddings"],
        mup_base_hidden_size=shape["mup_base_hidden_size"],
        mup_base_filter_size=shape["mup_base_filter_size"],
        **changes,
    )
    params = dict(init_model(cfg, seed=0).named_parameters())
    out = {}
    for layer in range(cfg.num_hidden_layers):
        q, k, v = params[f"layers.{layer}.attn.qkv.weight"].detach().chunk(3, dim=0)
        roles = {"q": q, "k": k, "v": v, "attn_out": params[f"layers.{layer}.attn.out.weight"].detach()}
        roles |= {"fc_in": params[f"layers.{layer}.mlp.fc_in.weight"].detach()}
        roles |= {"fc_out": params[f"layers.{layer}.mlp.fc_out.weight"].detach()}
        out |= {f"layers.{layer}.{role}": t.float().std().item() for role, t in roles.items()}
    return out


GIVEN = {
    "initializer": GOLDEN["given"]["initializer"],
    "output_layer_initializer": GOLDEN["given"]["output_layer_initializer"],
    "ffn_initializer": GOLDEN["given"]["ffn_initializer"],
    "ffn_output_initializer": GOLDEN["given"]["ffn_output_layer_initializer"],
}


@pytest.mark.parametrize(
    ("case", "changes"),
    [
        ("gptj_given", GIVEN),  # the default rule: ModelZoo's GPT-J
        ("gptj_default", {"initializer_range": 0.02}),
        ("gpt2_given", {**GIVEN, "mup_scale_all_initializers": True}),  # the switch: ModelZoo's GPT-2
    ],
)
def test_mup_init_std_matches_modelzoos_own_model(case, changes) -> None:
    want, got = GOLDEN["cases"][case], _gptx_stds(**changes)
    assert sorted(got) == sorted(want)
    for name in want:  # different random draws of >= 4096 numbers: the std agrees to a few percent
        assert got[name] == pytest.approx(want[name], rel=0.06), (case, name)


def test_the_two_rules_differ_where_the_config_gives_initializers() -> None:
    gptj, gpt2 = GOLDEN["cases"]["gptj_given"], GOLDEN["cases"]["gpt2_given"]
    assert all(gpt2[n] < 0.6 * gptj[n] for n in gptj)  # width (and depth) scaling only in GPT-2's rule
