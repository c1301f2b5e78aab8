"""The decoder, loss, initialisation, muP and switches: behaviour on tiny random configs."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from gptx_testing import NEOX_TINY, TINY

from gptx_cli.api import build_model
from gptx_cli.config.spec import ModelConfig
from gptx_cli.errors import ConfigError
from gptx_cli.model.init import optimizer_param_groups, resolved_initializers
from gptx_cli.model.loss import lm_loss
from gptx_cli.model.transformer import Transformer
from gptx_cli.train.parallel import apply_activation_checkpointing, compile_model


def batch(cfg: ModelConfig, b: int = 2, t: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, cfg.vocab_size, (b, t), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("cfg", [TINY, dataclasses.replace(NEOX_TINY, use_parallel_residual=False)])
def test_incremental_decoding_with_kv_cache_equals_full_forward(cfg: ModelConfig) -> None:
    model = build_model(cfg, seed=3).eval()
    ids = batch(cfg, t=20)
    with torch.no_grad():
        full = model(ids)
        cache = model.new_kv_cache(2, 20)
        prefill = model(ids[:, :7], kv_cache=cache, start_pos=0)
        chunk = model(ids[:, 7:12], kv_cache=cache, start_pos=7)  # several new tokens at once
        steps = [model(ids[:, i : i + 1], kv_cache=cache, start_pos=i) for i in range(12, 20)]
    incremental = torch.cat([prefill, chunk, *steps], dim=1)
    assert (incremental - full).abs().max().item() < 1e-5


def test_interleaved_rotary_is_the_half_split_with_permuted_rows() -> None:
    half = build_model(TINY, seed=1).eval()
    inter = Transformer(dataclasses.replace(TINY, rotary_interleaved=True)).eval()
    sd = half.state_dict()
    hd, rd, h = TINY.head_dim, TINY.resolved_rotary_dim, TINY.hidden_size
    # half position j <-> interleaved 2j, half j + rd/2 <-> interleaved 2j + 1
    order = torch.arange(hd)
    order[:rd:2], order[1:rd:2] = torch.arange(rd // 2), torch.arange(rd // 2, rd)
    for i in range(TINY.num_hidden_layers):
        w = sd[f"layers.{i}.attn.qkv.weight"].clone()
        for part in (0, 1):  # q and k
            rows = w[part * h : (part + 1) * h].view(TINY.num_heads, hd, h)
            w[part * h : (part + 1) * h] = rows[:, order].reshape(h, h)
        sd[f"layers.{i}.attn.qkv.weight"] = w
    inter.load_state_dict(sd)
    ids = batch(TINY)
    with torch.no_grad():
        assert (half(ids) - inter(ids)).abs().max().item() < 1e-5


def test_loss_scaling_follows_modelzoo() -> None:
    model = build_model(TINY, seed=0)
    ids, labels = batch(TINY, seed=1), batch(TINY, seed=2)
    mask = torch.ones_like(ids)
    mask[0, :5] = 0
    logits = model(ids).float()
    ce = torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="none")
    ce_sum = (ce * mask.flatten()).sum()
    by_tokens = lm_loss(model, ids, labels, mask)
    by_batch = lm_loss(model, ids, labels, mask, loss_scaling="batch_size", loss_weight=0.5)
    assert torch.allclose(by_tokens.loss, ce_sum / mask.sum(), atol=1e-6)
    assert torch.allclose(by_batch.loss, ce_sum / 2 * 0.5, atol=1e-5)
    assert by_tokens.num_tokens.item() == mask.sum().item()
    correct = ((logits.argmax(-1) == labels) & mask.bool()).sum().item()
    assert by_tokens.num_correct.item() == correct
    assert not by_tokens.loss_sum.requires_grad and by_tokens.loss_sum.dtype == torch.float32
    with pytest.raises(ConfigError, match="loss_weight"):
        lm_loss(model, ids, labels, mask, loss_weight=0.5)


def _autograd_reference(model: Transformer, ids, labels, mask) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The loss the plain way: full logits, F.cross_entropy, autograd through everything."""
    logits = model(ids).float()
    ce = torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="none")
    loss = (ce * mask.flatten()).sum() / mask.sum()
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize(
    "cfg",
    [
        TINY,  # untied head with a bias
        dataclasses.replace(NEOX_TINY, share_embedding_weights=True, use_bias_in_output=False),  # tied
        dataclasses.replace(TINY, mup_base_hidden_size=8, output_logits_alpha=2.0),  # muP logits scale
    ],
    ids=["untied-bias", "tied", "mup"],
)
@pytest.mark.parametrize("rows_per_chunk", [1000, 3, 1])
def test_fused_chunked_loss_equals_autograd_on_full_logits(cfg: ModelConfig, rows_per_chunk: int) -> None:
    # The head's gradient is computed in the forward pass, chunk by chunk: it must be the gradient
    # autograd gets from the full logits, for every parameter, with a partial mask.
    ids, labels = batch(cfg, seed=1), batch(cfg, seed=2)
    mask = torch.ones_like(ids)
    mask[0, :5] = 0
    model = build_model(cfg, seed=0)
    ref_loss, ref_grads = _autograd_reference(model, ids, labels, mask)
    model.zero_grad(set_to_none=True)
    out = lm_loss(model, ids, labels, mask, chunk_logits=rows_per_chunk * cfg.vocab_size)
    out.loss.backward()
    assert torch.allclose(out.loss.detach(), ref_loss, atol=1e-6)
    for (name, p), ref in zip(model.named_parameters(), ref_grads, strict=True):
        assert torch.allclose(p.grad, ref, atol=1e-6, rtol=1e-5), name


def test_fused_loss_under_bf16_autocast_matches_autograd_within_bf16_rounding() -> None:
    ids, labels = batch(TINY, seed=1), batch(TINY, seed=2)
    mask = torch.ones_like(ids)
    model = build_model(TINY, seed=0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref_loss, ref_grads = _autograd_reference(model, ids, labels, mask)
        model.zero_grad(set_to_none=True)
        out = lm_loss(model, ids, labels, mask, chunk_logits=5 * TINY.vocab_size)
    out.loss.backward()
    assert abs(out.loss.item() - ref_loss.item()) < 1e-2
    for (name, p), ref in zip(model.named_parameters(), ref_grads, strict=True):
        assert p.grad.dtype == torch.float32  # gradients in the parameters' dtype
        rel = (p.grad - ref).norm() / ref.norm()
        assert rel < 2e-2, (name, rel.item())


def test_loss_without_gradients_takes_no_gradient_path() -> None:
    ids, labels = batch(TINY, seed=1), batch(TINY, seed=2)
    model = build_model(TINY, seed=0)
    with torch.no_grad():
        out = lm_loss(model, ids, labels, torch.ones_like(ids), chunk_logits=3 * TINY.vocab_size)
    assert not out.loss.requires_grad
    ref = torch.nn.functional.cross_entropy(model(ids).flatten(0, 1), labels.flatten())
    assert torch.allclose(out.loss, ref.detach(), atol=1e-6)


def train_losses(cfg: ModelConfig, steps: int = 3, checkpointing: bool = False) -> list[float]:
    torch.manual_seed(0)  # dropout draws
    model = build_model(cfg, seed=11)
    if checkpointing:
        apply_activation_checkpointing(model)
    opt = torch.optim.AdamW(
        [
            {k: v for k, v in g.items() if k not in ("names", "lr_scale")}
            for g in optimizer_param_groups(model, cfg)
        ],
        lr=1e-2,
        weight_decay=0.1,
    )
    losses = []
    for _ in range(steps):
        ids = batch(cfg, seed=0)  # the same batch: the loss must fall
        out = lm_loss(model, ids[:, :-1], ids[:, 1:], torch.ones_like(ids[:, 1:]))
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.loss.item())
    return losses


def test_seeded_training_steps_are_deterministic_and_learn() -> None:
    cfg = dataclasses.replace(TINY, residual_dropout_rate=0.1, attention_dropout_rate=0.1)
    first, second = train_losses(cfg), train_losses(cfg)
    assert first == second
    assert first[-1] < first[0]


def test_activation_checkpointing_does_not_change_the_numbers() -> None:
    plain, ckpt = train_losses(NEOX_TINY), train_losses(NEOX_TINY, checkpointing=True)
    assert max(abs(a - b) for a, b in zip(plain, ckpt, strict=True)) < 1e-6


def test_activation_checkpointing_is_applied_from_outside_and_recomputes_each_block() -> None:
    model = build_model(TINY, seed=0)
    names = list(model.state_dict())
    calls = []
    mlp = model.layers[0].mlp
    mlp_forward = mlp.forward
    mlp.forward = lambda x: calls.append(1) or mlp_forward(x)  # counts recomputation too (hooks do not)
    ids = batch(TINY)

    def forward_backward() -> int:
        calls.clear()
        lm_loss(model, ids[:, :-1], ids[:, 1:], torch.ones_like(ids[:, 1:])).loss.backward()
        return len(calls)

    assert forward_backward() == 1
    apply_activation_checkpointing(model)
    assert forward_backward() == 2  # the block runs again in backward
    assert list(model.state_dict()) == names
    with torch.no_grad():
        calls.clear()
        model(ids)
    assert len(calls) == 1  # nothing to recompute without gradients
    apply_activation_checkpointing(model, enabled=False)
    assert forward_backward() == 1


def test_compiled_blocks_give_the_same_logits_and_names() -> None:
    model = build_model(TINY, seed=0).eval()
    ids = batch(TINY)
    with torch.no_grad():
        eager = model(ids)
        names = list(model.state_dict())
        compile_model(model, backend="aot_eager")  # the graph capture without C++ codegen: fast on CPU
        compiled = model(ids)
    assert list(model.state_dict()) == names
    assert (eager - compiled).abs().max().item() < 1e-6


def test_initialisation_is_seeded_and_follows_modelzoo_roles() -> None:
    cfg = dataclasses.replace(
        TINY,
        hidden_size=64,
        filter_size=256,
        vocab_size=500,
        initializer={"name": "truncated_normal", "mean": 0.0, "std": 0.05, "a": -0.06, "b": 0.06},
        output_layer_initializer={"name": "normal", "mean": 0.0, "std": 0.01},
    )
    a, b, c = build_model(cfg, seed=5), build_model(cfg, seed=5), build_model(cfg, seed=6)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["embed.weight"], sc["embed.weight"])
    qkv = sa["layers.0.attn.qkv.weight"]
    assert qkv.abs().max().item() <= 0.06  # a/b are absolute bounds
    # Unset ffn initializers copy output_layer_initializer: normal(0, 0.01).
    assert abs(sa["layers.1.mlp.fc_in.weight"].std().item() - 0.01) < 0.001
    assert abs(sa["layers.1.mlp.fc_out.weight"].std().item() - 0.01) < 0.001
    assert abs(sa["lm_head.weight"].std().item() - cfg.initializer_range) < 0.002
    default = sa["embed.weight"]  # default: truncated_normal(0.02) within +-2 std
    assert default.abs().max().item() <= 0.04 and abs(default.std().item() - 0.0176) < 0.002
    assert torch.equal(sa["layers.0.mlp.fc_in.bias"], torch.zeros(256))
    assert torch.equal(sa["layers.0.ln_1.weight"], torch.ones(64)) and torch.equal(
        sa["ln_f.bias"], torch.zeros(64)
    )


def test_mup_scales_init_logits_attention_and_learning_rates() -> None:
    base = dataclasses.replace(
        TINY,
        hidden_size=64,
        filter_size=128,
        initializer={"name": "normal", "std": 0.2},
        output_layer_initializer={"name": "truncated_normal", "std": 0.1, "a": -0.2, "b": 0.2},
    )
    mup = dataclasses.replace(
        base,
        mup_base_hidden_size=16,
        mup_base_filter_size=32,
        output_logits_alpha=2.0,
        scale_qk_dot_by_d=True,
        attention_logits_alpha=3.0,
        embeddings_scale=5.0,
        mup_scale_all_initializers=True,
    )
    inits = resolved_initializers(mup)
    assert inits["attention"]["std"] == pytest.approx(0.2 / 2)  # width_mult 4
    assert inits["attention_output"]["std"] == pytest.approx(0.1 / 2 / 2)  # (2 * layers)^-0.5 = 1/2
    assert inits["attention_output"]["b"] == pytest.approx(0.2 / 4)
    assert inits["ffn_output"]["std"] == pytest.approx(0.1 / 2 / 2)  # filter_mult 4
    model = build_model(mup, seed=0)
    assert model.logits_scale == pytest.approx(2.0 / 4)
    assert model.layers[0].attn.scale == pytest.approx(3.0 / mup.head_dim)
    # The forward multiplies embeddings by embeddings_scale and logits by alpha / width_mult.
    ids = batch(mup)
    with torch.no_grad():
        hidden = model.hidden_states(ids)
        plain_logits = torch.nn.functional.linear(hidden, model.lm_head.weight, model.lm_head.bias)
        assert torch.allclose(model(ids), plain_logits * 0.5, atol=1e-6)
    groups = optimizer_param_groups(model, mup)
    scale_of = {n: g["lr_scale"] for g in groups for n in g["names"]}
    no_decay = {n for g in groups if g.get("weight_decay") == 0.0 for n in g["names"]}
    assert scale_of["layers.0.attn.qkv.weight"] == scale_of["layers.0.attn.out.weight"] == 0.25
    assert scale_of["layers.0.mlp.fc_in.weight"] == 0.25 and scale_of["layers.0.mlp.fc_out.weight"] == 0.25
    assert scale_of["embed.weight"] == scale_of["layers.0.mlp.fc_in.bias"] == 1.0
    assert no_decay == {n for n in scale_of if n.endswith("bias") or ".ln_" in f".{n}"}
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_standard_attention_scale_and_dot_product() -> None:
    assert Transformer(TINY).layers[0].attn.scale == pytest.approx(1 / math.sqrt(TINY.head_dim))
    plain = dataclasses.replace(TINY, attention_type="dot_product")
    assert Transformer(plain).layers[0].attn.scale == 1.0


def test_tied_embeddings_have_no_separate_head_weight() -> None:
    tied = build_model(dataclasses.replace(TINY, share_embedding_weights=True), seed=0)
    assert "lm_head.weight" not in tied.state_dict() and "lm_head.bias" in tied.state_dict()
    assert tied.output_weight is tied.embed.weight


def test_coordinate_check_is_flat_under_mup_and_grows_under_standard_parametrisation() -> None:
    from gptx_cli.model.coord_check import RULES, coord_check

    mup = coord_check((32, 128), mup=True, scale_all_initializers=True, steps=3)
    gptj_rule = coord_check((32, 128), mup=True, scale_all_initializers=False, steps=3)
    sp = coord_check((32, 128), mup=False, steps=3)
    assert mup[1]["block1"] / mup[0]["block1"] < 1.3
    assert gptj_rule[1]["block1"] / gptj_rule[0]["block1"] > 1.5  # the given initializers stay unscaled
    assert sp[1]["block1"] / sp[0]["block1"] > 1.8
    assert "mup_scale_all_initializers: true" in RULES[0][0] and "ModelZoo GPT-J's rule" in RULES[1][0]


def test_mup_init_follows_modelzoo_gptj_by_default_and_says_so() -> None:
    """ModelZoo's GPTJModel.__init__ drops scale_initializers_by_dimension's result: the default (unset)
    initializers are scaled (dicts, in place), the ones the config gives are not."""
    from gptx_cli.model.init import mup_init_note

    mup = dataclasses.replace(
        TINY, hidden_size=64, filter_size=128, mup_base_hidden_size=16, mup_base_filter_size=32,
        initializer={"name": "truncated_normal", "std": 1.0, "a": -2.0, "b": 2.0},
    )  # fmt: skip
    inits = resolved_initializers(mup)
    assert inits["attention"] == {"name": "truncated_normal", "std": 1.0, "a": -2.0, "b": 2.0}  # given
    r = mup.initializer_range
    assert inits["attention_output"]["std"] == pytest.approx(r * 0.5 * 0.5)  # default: width 4, depth 2x2
    assert inits["ffn"]["std"] == pytest.approx(r * 0.5) and inits["ffn_output"]["std"] == pytest.approx(
        r / 4
    )
    note = mup_init_note(mup) or ""
    assert note.startswith("muP: the initializers the config gives (q/k/v weights) are not scaled by width")
    assert (
        "models/nlp/gptj/gptj_model.py, GPTJModel.__init__" in note and "mup_scale_all_initializers" in note
    )
    switched = resolved_initializers(dataclasses.replace(mup, mup_scale_all_initializers=True))
    assert switched["attention"]["std"] == pytest.approx(0.5) and switched["attention"]["b"] == pytest.approx(
        1.0
    )
    assert mup_init_note(dataclasses.replace(mup, mup_scale_all_initializers=True)) is None
    assert mup_init_note(TINY) is None


def test_load_model_reads_a_gptx_checkpoint_and_the_latest_in_a_model_dir(tmp_path) -> None:
    from gptx_cli.api import load_model
    from gptx_cli.checkpoint import save_checkpoint_dir
    from gptx_cli.errors import CheckpointError

    early, late = build_model(NEOX_TINY, seed=1), build_model(NEOX_TINY, seed=2)
    save_checkpoint_dir(
        tmp_path / "checkpoint_10", early.state_dict(), NEOX_TINY, step=10, config_yaml_dict={}
    )
    save_checkpoint_dir(
        tmp_path / "checkpoint_20", late.state_dict(), NEOX_TINY, step=20, config_yaml_dict={}
    )
    ids = batch(NEOX_TINY)
    direct = load_model(tmp_path / "checkpoint_10", dtype="bfloat16")
    assert direct.embed.weight.dtype == torch.bfloat16 and not direct.training
    latest = load_model(tmp_path)
    with torch.no_grad():
        assert torch.equal(latest(ids), late.eval()(ids))
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="not a model directory"):
        load_model(tmp_path / "empty")


@pytest.mark.parametrize("interleaved", [False, True])
def test_rotary_hand_written_backward_matches_autograd(interleaved: bool) -> None:
    from gptx_cli.model.transformer import _Rotary, _rotate, rotary_inv_freq

    angles = torch.arange(5, dtype=torch.float64)[:, None] * rotary_inv_freq(4, 10000.0).double()
    cos, sin = angles.cos()[:, None, :], angles.sin()[:, None, :]
    x = torch.randn(2, 5, 3, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: _Rotary.apply(t, cos, sin, 4, interleaved), (x,))
    g = torch.randn(2, 5, 3, 6, dtype=torch.float64)
    (ours,) = torch.autograd.grad(_Rotary.apply(x, cos, sin, 4, interleaved), x, g)
    (ref,) = torch.autograd.grad(_rotate(x, cos, sin, 4, interleaved), x, g)
    assert torch.allclose(ours, ref, atol=1e-12)


def test_bfloat16_autocast_keeps_attention_in_bfloat16_and_close_to_fp32() -> None:
    model = build_model(NEOX_TINY, seed=0).eval()
    ids = batch(NEOX_TINY)
    seen = []
    hook = model.layers[0].attn.out.register_forward_hook(lambda m, i, o: seen.append(i[0].dtype))
    with torch.no_grad():
        ref = model(ids)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(ids)
    hook.remove()
    assert seen == [torch.float32, torch.bfloat16]  # attention output: no promotion back to fp32
    assert (low.float() - ref).abs().max().item() < 0.1
