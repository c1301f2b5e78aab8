"""LoRA (ModelZoo's `Lora` callback, `--lora-r`) and the completion-only loss.

In process: only the adapters train (the base is bit-identical, the optimizer holds no state for it),
q/k/v get three ModelZoo adapters, target_modules select by ModelZoo class names, and the loss averages
over loss-mask tokens only. End to end (the real CLI): a LoRA run on a base checkpoint writes adapter-only
checkpoints naming the base, resumes bit-exactly, runs the same under DDP and FSDP2 as one process, and
exports merged Hugging Face weights whose logits equal base + adapters. With --lora-save-base the
checkpoints also hold the base, bit for bit, and eval, the HF export and resume work with the base gone."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch.utils._python_dispatch import TorchDispatchMode
from train_helpers import REPO, read_metrics, run_gptx, tiny_args

from gptx_cli.api import build_model, load_model
from gptx_cli.config import load_run_spec
from gptx_cli.config.lora import LoraParams, parse_lora_params, plan, trainable_parameters
from gptx_cli.errors import ConfigError
from gptx_cli.model.init import optimizer_param_groups
from gptx_cli.model.lora import apply_lora, is_adapter
from gptx_cli.model.loss import lm_loss
from gptx_cli.train.optim import build_optimizer

SMALL = ["model.vocab_size=96", "model.hidden_size=32", "model.num_heads=2", "model.filter_size=64"]


def _spec(*extra: str):
    return load_run_spec(REPO / "configs" / "tiny_gptj.yaml", overrides=[*SMALL, *extra])


def _batch(seed: int = 0, b: int = 2, t: int = 16):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 96, (b, t + 1), generator=g)
    mask = torch.zeros(b, t, dtype=torch.int64)
    mask[:, t // 2 :] = 1  # a "prompt" half (mask 0) and a "completion" half (mask 1)
    return ids[:, :-1], ids[:, 1:].clone(), mask


def test_only_adapters_train_and_the_base_stays_bit_identical() -> None:
    spec = _spec()
    model = build_model(spec.model, seed=1)
    base = {k: v.clone() for k, v in model.state_dict().items()}
    groups = parse_lora_params({"r": 4, "alpha": 8})
    adapted = apply_lora(model, groups, seed=1)
    assert len(adapted) == 2 + 4 * spec.model.num_hidden_layers  # embed, lm_head, qkv/out/fc_in/fc_out
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(is_adapter(n) for n in trainable)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == trainable_parameters(
        spec.model, groups
    )
    # Fresh adapters leave the model's function unchanged (B = 0; the embedding's A = 0).
    ids, labels, mask = _batch()
    ref = build_model(spec.model, seed=1).eval()
    assert torch.equal(model.eval()(ids), ref(ids))
    model.train()
    opt = build_optimizer(
        spec.optimizer, optimizer_param_groups(model, spec.model)
    )  # AdamW, weight decay 0.1
    for step in range(3):
        ids, labels, mask = _batch(step)
        opt.zero_grad()
        lm_loss(model, ids, labels, mask).loss.backward()
        opt.step()
    state = opt.state_dict()["state"]
    assert len(state) == len(trainable)  # no optimizer state for the frozen base
    now = model.state_dict()
    for k, v in base.items():
        assert torch.equal(now[k], v), k  # bit-identical base
    assert all(now[k].abs().sum() > 0 for k in now if k.endswith("lora_B") and not k.startswith("embed"))
    assert not torch.equal(model.eval()(ids), ref(ids))


def test_qkv_holds_three_modelzoo_adapters_and_merge_weights_folds_them() -> None:
    spec = _spec()
    model = build_model(spec.model, seed=1)
    apply_lora(model, parse_lora_params({"r": 2, "alpha": 4, "target_modules": ["MultiheadAttention"]}))
    qkv = model.layers[0].attn.qkv
    torch.nn.init.normal_(qkv.lora_B)
    h, r = spec.model.hidden_size, 2
    a, b = qkv.lora_A.view(3, r, h), qkv.lora_B.view(3, h, r)
    expected = torch.cat([b[i] @ a[i] for i in range(3)]) * 2.0  # q, k, v: one rank-2 adapter each
    assert torch.allclose(qkv.lora_delta_weight(), expected)
    x = torch.randn(3, 5, h)
    unmerged = qkv(x)
    qkv.merge_weights = True
    qkv.eval()
    assert torch.allclose(qkv(x), unmerged, atol=1e-6)  # the folded weight computes the same
    assert torch.allclose(qkv(x), F.linear(x, qkv.weight + expected), atol=1e-6)


def test_target_modules_select_by_modelzoo_class_names() -> None:
    cfg = _spec().model

    def targets(tm):
        return set(plan(cfg, [LoraParams(r=2, target_modules=tm)]))

    attn = {f"layers.{i}.attn.{p}" for i in range(2) for p in ("qkv", "out")}
    ffn = {f"layers.{i}.mlp.{p}" for i in range(2) for p in ("fc_in", "fc_out")}
    assert targets(["MultiheadAttention"]) == attn
    assert targets(["FeedForwardNetwork", "Linear"]) == ffn
    assert targets(["GPTJDecoderLayer"]) == attn | ffn
    assert targets(["Embedding"]) == {"embed"}
    assert targets(None) == attn | ffn | {"embed", "lm_head"}
    with pytest.raises(ConfigError, match="no modules were converted"):
        targets(["TransformerDecoderLayer"])  # GPT-J's layers are GPTJDecoderLayer in ModelZoo too
    with pytest.raises(ConfigError, match="fan_in_fan_out"):
        parse_lora_params({"r": 2, "fan_in_fan_out": True})
    with pytest.raises(ConfigError, match="unknown key 'rank'"):
        parse_lora_params([{"r": 2}, {"rank": 2}])


def test_loss_averages_over_completion_tokens_only() -> None:
    spec = _spec()
    model = build_model(spec.model, seed=1).eval()
    ids, labels, mask = _batch()
    out = lm_loss(model, ids, labels, mask, loss_scaling="num_tokens")
    # The prompt half's labels do not matter ...
    other = labels.clone()
    other[mask == 0] = (other[mask == 0] + 7) % 96
    assert torch.equal(lm_loss(model, ids, other, mask).loss, out.loss)
    # ... and the loss is the mean cross-entropy over the completion tokens.
    with torch.no_grad():
        ce = F.cross_entropy(model(ids).reshape(-1, 96).double(), labels.reshape(-1), reduction="none")
    hand = (ce * mask.reshape(-1)).sum() / mask.sum()
    assert out.num_tokens == int(mask.sum())
    assert out.loss.item() == pytest.approx(hand.item(), rel=1e-6)
    changed = labels.clone()
    changed[mask == 1] = (changed[mask == 1] + 7) % 96
    assert lm_loss(model, ids, changed, mask).loss != out.loss


# ------------------------------------------------------------------- no gradient for a frozen weight

V101 = [*SMALL[1:], "model.vocab_size=101"]  # a vocabulary no other weight dimension equals


class _VocabByHidden(TorchDispatchMode):
    """Records every op that makes a new vocab x hidden tensor (the head weight's shape, or its
    transpose); views and in-place ops make none."""

    def __init__(self, v: int, h: int) -> None:
        super().__init__()
        self.shapes, self.ops = {(v, h), (h, v)}, []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = [*args, *(kwargs or {}).values()]
        seen = {t.untyped_storage().data_ptr() for t in inputs if isinstance(t, torch.Tensor)}
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if (
                isinstance(t, torch.Tensor)
                and tuple(t.shape) in self.shapes
                and t.untyped_storage().data_ptr() not in seen
            ):
                self.ops.append(str(func.overloadpacket.__name__))
        return out


def _reference_loss(model, ids, labels, mask):
    """The slow path: full logits through Transformer.logits (autograd throughout) and F.cross_entropy."""
    logits = model.logits(model(ids, hidden_only=True))
    ce = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="none")
    return (ce * mask.flatten()).sum() / mask.sum()


def _grads_after(model, loss_fn):
    model.zero_grad(set_to_none=True)
    loss = loss_fn()
    loss.backward()
    return loss.detach(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize(
    ("extra", "targets", "merge_ops"),
    [
        ([], ["GPTJDecoderLayer"], []),  # untied head, frozen (no head adapter)
        (["model.share_embedding_weights=true"], None, []),  # tied head = the frozen embedding
        ([], None, ["mm", "mul", "add"]),  # LoRA head: W + B @ A * s in forward, nothing more
    ],
    ids=["frozen-untied-head", "frozen-tied-head", "lora-head"],
)
@pytest.mark.parametrize("chunk_rows", [1000, 5])
def test_lora_backward_builds_no_gradient_for_frozen_weights(extra, targets, merge_ops, chunk_rows) -> None:
    # The fused head loss used to build the head weight's [vocab, hidden] gradient even when the weight
    # was frozen (and, for a LoRA head, the merged weight's, to pass it on to the adapter).
    spec = _spec(*V101, *extra)
    cfg = spec.model
    model = build_model(cfg, seed=1)
    apply_lora(model, [LoraParams(r=2, alpha=4, target_modules=targets)], seed=1)
    with torch.no_grad():  # nonzero B everywhere, so every adapter gradient is exercised
        for n, p in model.named_parameters():
            if n.endswith("lora_B"):
                p.normal_(0, 0.1)
    ids, labels, mask = _batch(b=3, t=12)
    labels = labels % cfg.vocab_size
    watch = _VocabByHidden(cfg.vocab_size, cfg.hidden_size)
    with watch:
        fused_loss, fused = _grads_after(
            model, lambda: lm_loss(model, ids, labels, mask, chunk_logits=chunk_rows * cfg.vocab_size).loss
        )
    assert watch.ops == merge_ops
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert frozen and all(model.get_parameter(n).grad is None for n in frozen)
    ref_loss, ref = _grads_after(model, lambda: _reference_loss(model, ids, labels, mask))
    assert sorted(fused) == sorted(ref) == sorted(n for n, p in model.named_parameters() if p.requires_grad)
    assert abs(fused_loss.item() - ref_loss.item()) <= 1e-6
    for n, g in ref.items():
        torch.testing.assert_close(fused[n], g, rtol=1e-5, atol=1e-6, msg=n)


def test_the_fused_head_computes_only_the_gradients_asked_for() -> None:
    # Only the head's inputs that require grad get a gradient (here: bias and hidden, not the weight).
    cfg = _spec(*V101).model
    model = build_model(cfg, seed=1)
    model.requires_grad_(False)
    model.lm_head.bias.requires_grad_(True)
    model.layers[1].mlp.fc_out.weight.requires_grad_(True)
    ids, labels, mask = _batch(b=3, t=12)  # 36 rows: no [rows, vocab] tensor has the watched shape
    labels = labels % cfg.vocab_size
    watch = _VocabByHidden(cfg.vocab_size, cfg.hidden_size)
    with watch:
        fused_loss, fused = _grads_after(model, lambda: lm_loss(model, ids, labels, mask).loss)
    assert watch.ops == []
    ref_loss, ref = _grads_after(model, lambda: _reference_loss(model, ids, labels, mask))
    assert sorted(fused) == sorted(ref) == ["layers.1.mlp.fc_out.weight", "lm_head.bias"]
    assert abs(fused_loss.item() - ref_loss.item()) <= 1e-6
    for n, g in ref.items():
        torch.testing.assert_close(fused[n], g, rtol=1e-5, atol=1e-6, msg=n)


# ------------------------------------------------------------------------------------ end to end


def _lora_args(tiny_data, model_dir, *extra):
    return tiny_args(
        tiny_data, model_dir, "--lora-r", "4", "--lora-alpha", "8", "--set", "checkpoint.steps=2",
        "--set", "loop.eval_frequency=100", *extra,
    )  # fmt: skip


@pytest.fixture(scope="module")
def lora_base(tiny_data, tmp_path_factory):
    """A 2-step base checkpoint, and a 4-step LoRA run on it (checkpoints at 2 and 4)."""
    root = tmp_path_factory.mktemp("lora")
    r = run_gptx(
        "train", *tiny_args(tiny_data, root / "base", "--max-steps", "2", "--set", "checkpoint.steps=2")
    )
    assert r.returncode == 0, r.stderr
    base = root / "base" / "checkpoint_2"
    r = run_gptx(
        "train", *_lora_args(tiny_data, root / "lora", "--checkpoint-path", str(base), "--max-steps", "4")
    )
    assert r.returncode == 0, r.stderr
    return base, root / "lora"


@pytest.mark.slow
def test_lora_checkpoint_holds_only_adapters_and_names_its_base(lora_base):
    base, lora = lora_base
    ckpt = lora / "checkpoint_4"
    tensors = load_file(ckpt / "model.safetensors")
    assert tensors and all(is_adapter(k) for k in tensors)
    meta = json.loads((ckpt / "gptx.json").read_text())["lora"]
    base_meta = json.loads((base / "gptx.json").read_text())
    assert meta["base"] == {"path": str(base.resolve()), "checksums": base_meta["checksums"]}
    assert meta["adapters_only"] is True
    assert meta["params"] == [{"r": 4, "alpha": 8.0, "dropout": 0.0, "fan_in_fan_out": False,
                               "merge_weights": False, "target_modules": None}]  # fmt: skip
    losses = read_metrics(lora)
    assert losses[4]["loss"] < losses[1]["loss"]


@pytest.mark.slow
def test_lora_resumes_bit_exactly(tiny_data, lora_base, tmp_path):
    base, lora = lora_base
    resumed = tmp_path / "resumed"
    r = run_gptx("train", *_lora_args(tiny_data, resumed, "--checkpoint-path", str(base), "--max-steps", "2"))
    assert r.returncode == 0, r.stderr
    r = run_gptx("train", *_lora_args(tiny_data, resumed, "--max-steps", "4"))  # autoload checkpoint_2
    assert r.returncode == 0, r.stderr
    assert "resuming from" in r.stdout
    got, want = (
        load_file(resumed / "checkpoint_4" / "model.safetensors"),
        load_file(lora / "checkpoint_4" / "model.safetensors"),
    )
    assert sorted(got) == sorted(want) and all(torch.equal(got[k], want[k]) for k in want)
    assert [read_metrics(resumed)[s]["loss"] for s in (3, 4)] == [
        read_metrics(lora)[s]["loss"] for s in (3, 4)
    ]


@pytest.mark.multiprocess
@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_lora_on_two_processes_equals_one(tiny_data, lora_base, tmp_path, strategy):
    base, lora = lora_base
    r = run_gptx("train", *_lora_args(tiny_data, tmp_path / strategy, "--checkpoint-path", str(base),
                                       "--max-steps", "4", "--nproc", "2", "--strategy", strategy))  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert f"on 2 x cpu ({strategy})" in r.stdout
    got, want = read_metrics(tmp_path / strategy), read_metrics(lora)
    for s in range(1, 5):
        assert got[s]["loss"] == pytest.approx(want[s]["loss"], abs=1e-5), s
    a = load_file(tmp_path / strategy / "checkpoint_4" / "model.safetensors")
    b = load_file(lora / "checkpoint_4" / "model.safetensors")
    assert sorted(a) == sorted(b) and all(torch.allclose(a[k], b[k], atol=1e-5) for k in b)


@pytest.mark.slow
def test_merged_hf_export_equals_base_plus_adapters(lora_base, tmp_path):
    from transformers import GPTJForCausalLM

    base, lora = lora_base
    ckpt = lora / "checkpoint_4"
    r = run_gptx("convert", "checkpoint", str(ckpt), "--tgt-fmt", "hf", "--output-dir", str(tmp_path / "hf"))
    assert r.returncode == 0, r.stderr
    hf = GPTJForCausalLM.from_pretrained(tmp_path / "hf", torch_dtype=torch.float32).eval()
    # base + adapters, unmerged: the base model, the Lora callback's adapters, the trained values
    model = load_model(base).train()
    apply_lora(model, parse_lora_params({"r": 4, "alpha": 8}))
    adapters = load_file(ckpt / "model.safetensors")
    with torch.no_grad():
        for n, p in model.named_parameters():
            if is_adapter(n):
                p.copy_(adapters[n])
    model.eval()
    ids = torch.randint(0, int(model.cfg.vocab_size), (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours, theirs = model(ids), hf(ids).logits
        plain = load_model(base)(ids)
    assert (ours - theirs).abs().max().item() <= 1e-5
    assert (ours - plain).abs().max().item() > 1e-4  # the adapters did change the model
    # gptx's own loader (eval / generate) reads the LoRA checkpoint as base + adapters too
    assert (load_model(ckpt)(ids) - ours).abs().max().item() <= 1e-5
    r = run_gptx(
        "generate", "--checkpoint-path", str(lora), "--prompt", "alpha beta", "--max-new-tokens", "4"
    )
    assert r.returncode == 0, r.stderr


def test_memory_guard_counts_what_lora_saves_gptj_6b_bf16() -> None:
    """GPT-J-6B in bf16 (the published config, micro-batch 1, activation checkpointing): full fine-tuning
    does not fit an 80 GiB GPU, LoRA (r 8 on the attention) does; validate-config --summary says so."""
    from gptx_cli.model.counts import run_summary
    from gptx_cli.train.memory_guard import GIB, HEADROOM, estimate_bytes

    path = REPO / "configs" / "params_gptj_6B.yaml"
    full = load_run_spec(path)
    lora = load_run_spec(path)
    from gptx_cli.config.lora import add_lora_shortcut

    add_lora_shortcut(lora.raw, 8, 16)
    budget = 80 * GIB * HEADROOM
    est_full = estimate_bytes(full, 1, 1, False, True)
    est_lora = estimate_bytes(lora, 1, 1, False, True)
    assert est_full["total"] > budget > est_lora["total"]
    trainable = run_summary(lora)["trainable_parameters"]
    assert est_lora["grads"] == 4 * trainable and est_lora["optimizer_state"] == 8 * trainable
    assert run_summary(full)["trainable_parameters"] == run_summary(full)["parameters"]
    assert 0 < trainable < run_summary(full)["parameters"] / 100


@pytest.mark.slow
def test_a_lora_checkpoint_refuses_a_changed_or_missing_base(lora_base, tmp_path):
    import shutil

    from gptx_cli.errors import CheckpointError

    _, lora = lora_base
    copy = tmp_path / "checkpoint_4"
    shutil.copytree(lora / "checkpoint_4", copy)
    meta = json.loads((copy / "gptx.json").read_text())
    good = dict(meta["lora"]["base"])
    meta["lora"]["base"]["checksums"] = {k: "0" * 16 for k in good["checksums"]}
    (copy / "gptx.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="not the one the adapters were trained on"):
        load_model(copy)
    meta["lora"]["base"] = {"path": str(tmp_path / "gone")}
    (copy / "gptx.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(copy)


def test_the_lora_callback_of_a_config_is_read_and_not_run_as_a_step_hook(tmp_path) -> None:
    from gptx_cli.config.lora import lora_from_raw
    from gptx_cli.train.callbacks import build_callbacks

    spec = load_run_spec(REPO / "configs" / "finetune_tiny_gptj.yaml")
    assert lora_from_raw(spec.raw, spec.source) == [
        LoraParams(r=8, alpha=16, dropout=0.0, merge_weights=False, target_modules=["GPTJDecoderLayer"])
    ]
    build_callbacks(spec, tmp_path)  # the trainer's step hooks: Lora is not one of them


@pytest.mark.slow
def test_gptx_eval_reads_base_plus_adapters(tiny_data, lora_base):
    """`gptx eval` on the LoRA run's model_dir gives the loss the run itself measured on the same
    validation batches at its last step (base + adapters), not the base's."""
    base, lora = lora_base
    r = run_gptx("eval", *tiny_args(tiny_data, lora, "--checkpoint-path", str(lora)))
    assert r.returncode == 0, r.stderr
    got = json.loads((lora / "eval_results" / "checkpoint_4.json").read_text())["metrics"]["loss"]
    assert got == pytest.approx(read_metrics(lora, "eval")[4]["loss"], abs=1e-5)
    r = run_gptx("eval", *tiny_args(tiny_data, base.parent, "--checkpoint-path", str(base)))
    assert r.returncode == 0, r.stderr
    plain = json.loads((base.parent / "eval_results" / "checkpoint_2.json").read_text())["metrics"]["loss"]
    assert abs(plain - got) > 1e-4


# ------------------------------------------------------------------ --lora-save-base (gptx extension)


@pytest.fixture(scope="module")
def lora_saved_base(tiny_data, lora_base, tmp_path_factory):
    """lora_base's LoRA run again with --lora-save-base, on a copy of its base that is then deleted."""
    import shutil

    base, _ = lora_base
    root = tmp_path_factory.mktemp("lora_save_base")
    copy = root / "base" / "checkpoint_2"
    shutil.copytree(base, copy)
    r = run_gptx("train", *_lora_args(tiny_data, root / "lora", "--checkpoint-path", str(copy),
                                       "--max-steps", "4", "--lora-save-base"))  # fmt: skip
    assert r.returncode == 0, r.stderr
    shutil.rmtree(root / "base")
    return copy, root / "lora"


@pytest.mark.slow
def test_lora_save_base_checkpoint_holds_the_base_bit_for_bit_and_the_adapters(lora_base, lora_saved_base):
    from gptx_cli.checksum import verify_checkpoint

    base, lora = lora_base
    gone, saved = lora_saved_base
    ckpt = saved / "checkpoint_4"
    got = load_file(ckpt / "model.safetensors")
    want_base = load_file(base / "model.safetensors")
    want_adapters = load_file(lora / "checkpoint_4" / "model.safetensors")  # the adapters-only run's
    assert sorted(got) == sorted([*want_base, *want_adapters])
    assert all(torch.equal(got[k], want_base[k]) for k in want_base)  # the base as trained: unchanged
    assert all(torch.equal(got[k], want_adapters[k]) for k in want_adapters)  # the same adapters
    meta = json.loads((ckpt / "gptx.json").read_text())
    assert meta["lora"]["adapters_only"] is False
    assert meta["lora"]["base"] == {  # still named, for provenance
        "path": str(gone.resolve()),
        "checksums": json.loads((base / "gptx.json").read_text())["checksums"],
    }
    assert not gone.exists()
    verify_checkpoint(ckpt, meta)  # the checksums cover the base weights too
    ids = torch.randint(0, 50, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():  # gptx's loader (eval / generate): base + adapters from the checkpoint alone
        diff = load_model(ckpt)(ids) - load_model(lora / "checkpoint_4")(ids)
    assert diff.abs().max().item() <= 1e-5


@pytest.mark.slow
def test_lora_save_base_checkpoint_works_without_its_base(tiny_data, lora_base, lora_saved_base, tmp_path):
    """eval, generate and the merged Hugging Face export read the base from the checkpoint itself."""
    from transformers import GPTJForCausalLM

    _, lora = lora_base
    _, saved = lora_saved_base
    r = run_gptx("eval", *tiny_args(tiny_data, saved, "--checkpoint-path", str(saved)))
    assert r.returncode == 0, r.stderr
    got = json.loads((saved / "eval_results" / "checkpoint_4.json").read_text())["metrics"]["loss"]
    assert got == pytest.approx(read_metrics(lora, "eval")[4]["loss"], abs=1e-5)
    ckpt = saved / "checkpoint_4"
    r = run_gptx("convert", "checkpoint", str(ckpt), "--tgt-fmt", "hf", "--output-dir", str(tmp_path / "hf"))
    assert r.returncode == 0, r.stderr
    hf = GPTJForCausalLM.from_pretrained(tmp_path / "hf", torch_dtype=torch.float32).eval()
    ids = torch.randint(0, hf.config.vocab_size, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():  # the adapters-only run's base + adapters (its export: test_merged_hf_export_...)
        assert (hf(ids).logits - load_model(lora / "checkpoint_4")(ids)).abs().max().item() <= 1e-5
    r = run_gptx(
        "generate", "--checkpoint-path", str(saved), "--prompt", "alpha beta", "--max-new-tokens", "4"
    )
    assert r.returncode == 0, r.stderr


@pytest.mark.slow
def test_lora_save_base_resumes_bit_exactly_without_its_base(tiny_data, lora_saved_base, tmp_path):
    """Resumed from its step-2 checkpoint (whose named base is gone), without the flag: the base comes
    from the checkpoint, the checkpoints keep holding it, and step 4 equals the uninterrupted run's."""
    import shutil

    _, saved = lora_saved_base
    shutil.copytree(saved / "checkpoint_2", tmp_path / "resumed" / "checkpoint_2")
    r = run_gptx("train", *_lora_args(tiny_data, tmp_path / "resumed", "--max-steps", "4"))
    assert r.returncode == 0, r.stderr
    assert "holds its base weights; its checkpoints keep holding them" in r.stdout
    got = load_file(tmp_path / "resumed" / "checkpoint_4" / "model.safetensors")
    want = load_file(saved / "checkpoint_4" / "model.safetensors")
    assert sorted(got) == sorted(want) and all(torch.equal(got[k], want[k]) for k in want)
    meta = json.loads((tmp_path / "resumed" / "checkpoint_4" / "gptx.json").read_text())["lora"]
    assert meta["adapters_only"] is False
    assert [read_metrics(tmp_path / "resumed")[s]["loss"] for s in (3, 4)] == [
        read_metrics(saved)[s]["loss"] for s in (3, 4)
    ]


def test_lora_save_base_without_lora_is_an_error(tiny_data, tmp_path):
    r = run_gptx("train", *tiny_args(tiny_data, tmp_path / "m", "--max-steps", "1", "--lora-save-base"))
    assert r.returncode != 0
    assert r.stderr.strip().splitlines()[0] == (
        "error: --lora-save-base needs LoRA: --lora-r or a Lora callback in the config"
    )
    assert not list((tmp_path / "m").glob("checkpoint_*"))


# ------------------------------------------------------------------ LoRA: refused or resumed, never silent


@pytest.mark.parametrize("alpha", ["0", "-1", "nan", "inf"])
def test_lora_alpha_flag_must_be_finite_and_positive(tiny_data, tmp_path, alpha):
    r = run_gptx("train", *tiny_args(tiny_data, tmp_path / "m", "--lora-r", "4", "--lora-alpha", alpha))
    assert r.returncode == 2, r.stderr
    line = r.stderr.strip().splitlines()[0]
    assert line.startswith(f"error: --lora-alpha {alpha}: must be"), line
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize(
    ("old", "new", "key", "message"),
    [
        ("alpha: 16", "alpha: 0", "alpha", "must be a finite number > 0 (got 0)"),
        ("alpha: 16", "alpha: -1", "alpha", "must be a finite number > 0 (got -1)"),
        ("alpha: 16", "alpha: .nan", "alpha", "must be a finite number > 0 (got nan)"),
        ("r: 8", "r: 0", "r", "must be a positive integer (got 0)"),
        ("dropout: 0.0", "dropout: 1.5", "dropout", "must be in [0, 1) (got 1.5)"),
        ("[GPTJDecoderLayer]", "[Bogus]", "target_modules", "'Bogus' is no module class of ModelZoo's GPT-J"),
    ],
)
def test_validate_config_checks_the_lora_callback_as_train_does(tiny_data, tmp_path, old, new, key, message):
    text = (REPO / "configs" / "finetune_tiny_gptj.yaml").read_text()
    assert old in text
    path = tmp_path / "lora.yaml"
    path.write_text(text.replace(old, new, 1))
    line = next(i for i, t in enumerate(path.read_text().splitlines(), 1) if new in t)
    where = f"{path}:{line}:"
    r = run_gptx("validate-config", str(path))
    assert r.returncode == 1
    (err,) = [s for s in (r.stdout + r.stderr).splitlines() if s.startswith(where)]
    assert f"trainer.init.callbacks[0].Lora.lora_params.{key}: {message}" in err
    r = run_gptx("train", str(path), "--model-dir", str(tmp_path / "m"))
    assert r.returncode == 1
    first = r.stderr.strip().splitlines()[0]
    assert first.startswith(f"error: {path}:") and f"lora_params.{key}: " in first, first
    assert not (tmp_path / "m").exists()


@pytest.mark.slow
def test_lora_resume_with_other_settings_is_refused_naming_both(tiny_data, lora_base, tmp_path):
    _, lora = lora_base
    model_dir = tmp_path / "m"
    shutil.copytree(lora / "checkpoint_2", model_dir / "checkpoint_2")
    r = run_gptx(
        "train", *tiny_args(tiny_data, model_dir, "--lora-r", "4", "--lora-alpha", "32", "--max-steps", "4")
    )
    assert r.returncode != 0
    line = r.stderr.strip().splitlines()[0]
    assert f"{model_dir / 'checkpoint_2'} was trained with LoRA r=4, alpha=8," in line, line
    assert "this run asks for LoRA r=4, alpha=32," in line
    assert not (model_dir / "checkpoint_4").exists()


@pytest.mark.slow
def test_lora_resume_without_the_flags_takes_the_checkpoints_settings(tiny_data, lora_base, tmp_path):
    """Re-running a LoRA model_dir without --lora-r: the recorded settings, said in one line, and the run
    equals the uninterrupted one (it used to fail with 'Missing optimizer state for model.embed.weight')."""
    _, lora = lora_base
    model_dir = tmp_path / "m"
    shutil.copytree(lora / "checkpoint_2", model_dir / "checkpoint_2")
    args = tiny_args(tiny_data, model_dir, "--set", "checkpoint.steps=2", "--set", "loop.eval_frequency=100")
    r = run_gptx("train", *args, "--max-steps", "4")
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("is a LoRA checkpoint; resuming with its settings (r=4, alpha=8, dropout=0") == 1
    got = load_file(model_dir / "checkpoint_4" / "model.safetensors")
    want = load_file(lora / "checkpoint_4" / "model.safetensors")
    assert sorted(got) == sorted(want) and all(torch.equal(got[k], want[k]) for k in want)


def test_lora_r_beside_a_lora_callback_keeps_its_targets_and_says_so(tmp_path):
    r = run_gptx("train", str(REPO / "configs" / "finetune_tiny_gptj.yaml"), "--lora-r", "2",
                 "--model-dir", str(tmp_path / "m"))  # fmt: skip
    assert r.returncode != 0  # its data dirs do not exist here; the note comes first
    assert (
        "note: --lora-r 2: set in each group of the config's Lora callback; its target_modules stay "
        "(['GPTJDecoderLayer'])"
    ) in r.stdout


def test_memory_guard_never_proposes_fsdp_on_one_process() -> None:
    """A huge LoRA rank on GPT-J-6B: what the guard proposes would fit, and FSDP only over 2+ processes."""
    import re

    from gptx_cli import distributed
    from gptx_cli.config.lora import add_lora_shortcut
    from gptx_cli.errors import GptxError
    from gptx_cli.train.memory_guard import check_memory

    spec = load_run_spec(REPO / "configs" / "params_gptj_6B.yaml")
    add_lora_shortcut(spec.raw, 16384, None)
    with pytest.raises(GptxError) as err:
        check_memory(spec, distributed.Dist(device="cpu"), micro_batch_size=1, strategy="fsdp",
                     activation_checkpointing=True)  # fmt: skip
    hint = err.value.hint or ""
    assert "what would help" in hint
    assert all(int(n) >= 2 for n in re.findall(r"--nproc (\d+)", hint)), hint
    assert "a smaller LoRA rank (--lora-r 8)" in hint or "--nproc" in hint or "80 GiB GPU" in hint, hint


# ------------------------------------------------------------------ weight decay as ModelZoo's rule


def _modelzoo_should_apply_weight_decay(model, param_name):
    """ModelZoo 2.10's common/optim_utils.py: _should_apply_weight_decay, verbatim but for its RMSNorm."""
    norm_modules = (
        torch.nn.LayerNorm, torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d,
        torch.nn.InstanceNorm1d, torch.nn.InstanceNorm2d, torch.nn.InstanceNorm3d, torch.nn.GroupNorm,
        torch.nn.SyncBatchNorm, torch.nn.RMSNorm,
    )  # fmt: skip
    if "bias" in param_name:
        return False
    for name, module in model.named_modules():
        if name in param_name:
            if isinstance(module, norm_modules):
                return False
    return True


@pytest.mark.parametrize(
    "lora", [None, {"r": 4, "alpha": 8}, {"r": 4, "target_modules": ["GPTJDecoderLayer"]}]
)
def test_weight_decay_groups_follow_modelzoos_rule_lora_adapters_included(lora) -> None:
    spec = _spec()
    model = build_model(spec.model, seed=1)
    if lora is not None:
        apply_lora(model, parse_lora_params(lora), seed=1)
    groups = optimizer_param_groups(model, spec.model)
    decayed = {n for g in groups if g.get("weight_decay") != 0.0 for n in g["names"]}
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert decayed == {n for n in trainable if _modelzoo_should_apply_weight_decay(model, n)}
    if lora is not None:
        adapters = {n for n in trainable if is_adapter(n)}
        assert adapters and adapters <= decayed  # ModelZoo (and HF) decay LoRA adapters


@pytest.mark.slow
def test_lora_save_base_resumes_with_its_documented_command_once_the_base_is_deleted(
    tiny_data, lora_saved_base, tmp_path
):
    """finetune.md's `gptx continue-pretrain ... --checkpoint-path BASE --lora-r 8 --lora-save-base`, run
    again after BASE was deleted: the run resumes from its own checkpoint, which holds the base."""
    base, saved = lora_saved_base
    assert not base.exists()
    model_dir = tmp_path / "m"
    shutil.copytree(saved / "checkpoint_2", model_dir / "checkpoint_2")
    r = run_gptx("continue-pretrain", *_lora_args(tiny_data, model_dir, "--checkpoint-path", str(base),
                                                   "--max-steps", "4", "--lora-save-base"))  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "resuming the continued pretraining from" in r.stdout
    got = load_file(model_dir / "checkpoint_4" / "model.safetensors")
    want = load_file(saved / "checkpoint_4" / "model.safetensors")
    assert sorted(got) == sorted(want) and all(torch.equal(got[k], want[k]) for k in want)
