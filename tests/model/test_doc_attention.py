"""Document-masked (VSL) attention and position_ids: a packed sample is exact per document."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from gptx_testing import NEOX_TINY, TINY

from gptx_cli.api import build_model
from gptx_cli.model.doc_attention import VSL_BACKENDS, causal_padding_mask, document_causal_mask
from gptx_cli.model.loss import lm_loss
from gptx_cli.model.transformer import Transformer
from gptx_cli.train.parallel import apply_activation_checkpointing

GPTJ, NEOX = TINY, NEOX_TINY
FAMILIES = {
    "gptj": GPTJ,
    "neox-parallel": NEOX,
    "neox-sequential": dataclasses.replace(NEOX, use_parallel_residual=False),
}
DOC_LENGTHS = [(7, 12, 3, 9), (20, 2, 11)]  # per row; the rows are then padded to MSL
MSL = 40
PAD = 0


def _docs(seed: int = 0) -> list[list[torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [[torch.randint(1, 97, (n,), generator=g) for n in row] for row in DOC_LENGTHS]


def _pack(rows: list[list[torch.Tensor]]) -> dict[str, torch.Tensor]:
    """ModelZoo's auto-LM VSL layout (create_features_auto_lm_vsl), as the loader yields it."""
    out: dict[str, list[torch.Tensor]] = {
        k: [] for k in ("input_ids", "labels", "attention_mask", "span", "pos")
    }
    for docs in rows:
        ids = torch.cat(docs)
        span = torch.cat([torch.arange(len(d) - 1, -1, -1) for d in docs])[:-1]
        span[len(ids) - len(docs[-1]) :] -= 1  # the last document lost its final token
        pos = torch.cat([torch.arange(len(d)) for d in docs])[:-1]
        mask = torch.cat([torch.cat([torch.ones(len(d) - 1), torch.zeros(1)]) for d in docs])[:-1]
        pad = MSL - (len(ids) - 1)
        out["input_ids"].append(torch.cat([ids[:-1], torch.full((pad,), PAD)]))
        out["labels"].append(torch.cat([ids[1:], torch.full((pad,), PAD)]))
        out["attention_mask"].append(torch.cat([mask, torch.zeros(pad)]).long())
        out["span"].append(torch.cat([span, torch.zeros(pad, dtype=torch.long)]))
        out["pos"].append(torch.cat([pos, torch.zeros(pad, dtype=torch.long)]))
    batch = {k: torch.stack(v) for k, v in out.items()}
    batch["attention_span"], batch["position_ids"] = batch.pop("span"), batch.pop("pos")
    return batch


def _model(name: str, backend: str) -> Transformer:
    model = build_model(FAMILIES[name], seed=5)
    model.vsl_attention = backend
    return model


@pytest.mark.parametrize("backend", VSL_BACKENDS)
@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_packed_logits_equal_each_document_alone(name: str, backend: str) -> None:
    model = _model(name, backend).eval()
    rows = _docs()
    batch = _pack(rows)
    with torch.no_grad():
        packed = model(
            batch["input_ids"], position_ids=batch["position_ids"], attention_span=batch["attention_span"]
        )
        for r, docs in enumerate(rows):
            start = 0
            for i, doc in enumerate(docs):
                ids = doc if i < len(docs) - 1 else doc[:-1]  # the last one lost its final token
                alone = model(ids[None])[0]
                got = packed[r, start : start + len(ids)]
                assert (got - alone).abs().max().item() <= 1e-5, (r, i)
                start += len(ids)
        assert torch.isfinite(packed).all()  # padding rows attend to themselves only


def _doc_losses(model: torch.nn.Module, rows: list[list[torch.Tensor]]) -> list[tuple[torch.Tensor, int]]:
    """Each document's own loss over its n - 1 next-token predictions (the packed sample counts the same
    ones: a document's last input token predicts the next document and is masked out; the last
    document's final token is only ever a label)."""
    out = []
    for docs in rows:
        for doc in docs:
            ones = torch.ones(1, len(doc) - 1, dtype=torch.long)
            out.append((lm_loss(model, doc[None, :-1], doc[None, 1:], ones).loss, len(doc) - 1))
    return out


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_vsl_loss_is_the_token_weighted_mean_of_document_losses(name: str) -> None:
    model = _model(name, "auto").eval()
    rows = _docs(1)
    batch = _pack(rows)
    with torch.no_grad():
        packed = lm_loss(
            model,
            batch["input_ids"],
            batch["labels"],
            batch["attention_mask"],
            position_ids=batch["position_ids"],
            attention_span=batch["attention_span"],
        )
        docs = _doc_losses(model, rows)
    weighted = sum(loss * n for loss, n in docs) / sum(n for _, n in docs)
    assert int(packed.num_tokens) == sum(n for _, n in docs)
    assert abs(packed.loss.item() - float(weighted)) <= 1e-5


GRAD_CASES = [(name, "auto", False) for name in sorted(FAMILIES)] + [
    ("neox-parallel", "auto", True),  # activation checkpointing carries the mask into the recompute
    ("gptj", "varlen", False),
    ("neox-sequential", "varlen", False),
]


@pytest.mark.parametrize(("name", "backend", "checkpointing"), GRAD_CASES)
def test_packed_gradients_equal_summed_document_gradients(
    name: str, backend: str, checkpointing: bool
) -> None:
    model = _model(name, backend).train()
    if checkpointing:
        apply_activation_checkpointing(model)
    rows = _docs(2)
    batch = _pack(rows)
    # loss_scaling batch_size over a batch of one row: the loss is the CE sum, so gradients add up.
    model.zero_grad()
    for r in range(len(rows)):
        lm_loss(
            model,
            batch["input_ids"][r : r + 1],
            batch["labels"][r : r + 1],
            batch["attention_mask"][r : r + 1],
            loss_scaling="batch_size",
            position_ids=batch["position_ids"][r : r + 1],
            attention_span=batch["attention_span"][r : r + 1],
        ).loss.backward()
    packed = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    for docs in rows:
        for doc in docs:
            mask = torch.ones(1, len(doc) - 1, dtype=torch.long)
            lm_loss(model, doc[None, :-1], doc[None, 1:], mask, loss_scaling="batch_size").loss.backward()
    for n, p in model.named_parameters():
        assert p.grad is not None
        assert (packed[n] - p.grad).abs().max().item() <= 1e-5, n


def test_plain_positions_are_bit_identical_to_no_arguments() -> None:
    model = _model("gptj", "auto").eval()
    ids = torch.randint(0, 97, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        plain = model(ids)
        explicit = model(ids, position_ids=torch.arange(16).expand(2, 16))
        one_doc = model(ids, attention_span=torch.arange(15, -1, -1).expand(2, 16))
    assert torch.equal(plain, explicit)
    assert (plain - one_doc).abs().max().item() <= 1e-5


def test_document_mask_is_modelzoo_create_vsl_mask() -> None:
    # The docstring example of ModelZoo's create_vsl_mask: documents of 3 and 2 tokens.
    span = torch.tensor([[2, 1, 0, 1, 0]])
    expected = torch.tensor(
        [
            [1, 0, 0, 0, 0],
            [1, 1, 0, 0, 0],
            [1, 1, 1, 0, 0],
            [0, 0, 0, 1, 0],
            [0, 0, 0, 1, 1],
        ],
        dtype=torch.bool,
    )
    assert torch.equal(document_causal_mask(span)[0, 0], expected)


@pytest.mark.parametrize("name", ["gptj", "neox-sequential"])
def test_left_padded_batch_with_kv_cache_matches_unpadded(name: str) -> None:
    """What batched generation needs: padding mask over keys + position_ids, prefill then steps."""
    model = _model(name, "auto").eval()
    g = torch.Generator().manual_seed(4)
    prompts = [torch.randint(1, 97, (n,), generator=g) for n in (9, 5)]
    steps = torch.randint(1, 97, (2, 3), generator=g)  # tokens fed after the prompts
    width = 9
    ids = torch.stack([torch.cat([torch.full((width - len(p),), PAD), p]) for p in prompts])
    valid = torch.stack([torch.arange(width) >= width - len(p) for p in prompts])
    pos = (valid.cumsum(1) - 1).clamp(min=0)
    with torch.no_grad():
        cache = model.new_kv_cache(2, width + 3)
        first = model(ids, kv_cache=cache, attn_mask=causal_padding_mask(valid, width), position_ids=pos)
        outs = [first[:, -1]]
        for i in range(3):
            valid = torch.cat([valid, torch.ones(2, 1, dtype=torch.bool)], dim=1)
            pos_s = pos[:, -1:] + 1 + i
            step = model(
                steps[:, i : i + 1],
                kv_cache=cache,
                start_pos=width + i,
                attn_mask=causal_padding_mask(valid, 1, width + i),
                position_ids=pos_s,
            )
            outs.append(step[:, -1])
        for r, p in enumerate(prompts):
            alone = model(torch.cat([p, steps[r]])[None])[0, len(p) - 1 :]
            got = torch.stack([o[r] for o in outs])
            assert (got - alone).abs().max().item() <= 1e-5


def test_auto_picks_the_measured_implementation() -> None:
    from gptx_cli.model.doc_attention import select_backend

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert select_backend("auto", cpu, seq_len=2048) == "varlen"  # docs/benchmarks.md, bench_vsl.py
    assert select_backend("auto", cpu, seq_len=128) == "sdpa_mask"
    assert select_backend("auto", cpu, seq_len=2048, compiled=True) == "sdpa_mask"
    assert select_backend("auto", cuda, seq_len=2048) == "sdpa_mask"
    assert select_backend("flex", cpu, grad=True) == "sdpa_mask"  # no FlexAttention backward on CPU
    assert select_backend("flex", cpu) == "flex"
    model = _model("gptj", "auto").train()
    assert model.vsl_backend("cpu", 2048) == "varlen"
    with pytest.raises(ValueError, match="one of auto, sdpa_mask, flex, varlen"):
        select_backend("fast", cpu)
