"""Batched generation with left padding: every row equals one-at-a-time greedy decoding and transformers'
batched `generate` (left padding, attention mask) token for token, for GPT-NeoX (rotary with left
padding is the trap of transformers #22161) and GPT-J; `gptx generate --prompts-file` through the CLI."""

from __future__ import annotations

import json

import pytest
import torch
from eval_helpers import tiny_gptj, tiny_neox
from gptx_testing import run_gptx, shared_path

from gptx_cli.eval.generate import (
    BatchGenerator,
    CachedDecoder,
    SamplingConfig,
    generate,
    generate_batch,
)

TEXTS = [
    "The assert statement is a convenient way to insert debugging assertions into a program",
    "Names",
    "A break statement may only occur syntactically nested in a for or while loop",
    "Deletion of a name removes the binding of that name",
]
NEW = 10


@pytest.fixture(scope="module")
def tok():
    from gptx_cli.data.tokenizer import load_tokenizer

    return load_tokenizer(shared_path("assets", "tokenizers", "gpt2"))


def _gptx(hf, tmp_path):
    from gptx_cli import load_model

    hf.save_pretrained(tmp_path)
    return load_model(str(tmp_path)).eval()


@pytest.mark.parametrize("build", [tiny_neox, tiny_gptj], ids=["neox", "gptj"])
def test_batched_greedy_equals_one_at_a_time_and_hf_batched_generate(build, tok, tmp_path):
    hf = build(seed=7, max_positions=64)
    model = _gptx(hf, tmp_path)
    prompts = [tok.encode(t) for t in TEXTS]
    assert len({len(p) for p in prompts}) == len(prompts)  # every row padded differently
    batched = [r.tokens for r in generate_batch(model, prompts, SamplingConfig(max_new_tokens=NEW))]
    alone = [
        generate(CachedDecoder(model, len(p) + NEW), tok, p, SamplingConfig(max_new_tokens=NEW)).tokens
        for p in prompts
    ]
    assert batched == alone
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    with torch.no_grad():
        out = hf.generate(
            input_ids=ids, attention_mask=mask, max_new_tokens=NEW, do_sample=False, pad_token_id=0
        )
    assert out[:, width:].tolist() == batched


def test_rows_stop_on_their_own_and_generate_until_cuts_at_stops(tok, tmp_path):
    model = _gptx(tiny_neox(seed=2, max_positions=64), tmp_path)
    prompts = [tok.encode(t) for t in TEXTS]
    free = [r.text for r in generate_batch(model, prompts, SamplingConfig(max_new_tokens=NEW), tok)]
    stop = free[0][3:6]  # a piece of the first row's text: that row stops early, the others need not
    cfg = SamplingConfig(max_new_tokens=NEW, stop=(stop,))
    rows = generate_batch(model, prompts, cfg, tok)
    assert rows[0].stop_reason == "stop" and rows[0].text == free[0][: free[0].find(stop)]
    for r, text in zip(rows[1:], free[1:], strict=True):
        assert r.text == (text.split(stop)[0])
    gen = BatchGenerator(model, _Harness(tok), max_length=64, batch_size=3)
    got = gen.generate_until(TEXTS, [stop], NEW)
    assert got == [t.split(stop)[0] for t in free]


class _Harness:
    def __init__(self, tok):
        self.tok, self.eos_id = tok, tok.eos_id

    def encode(self, text):
        return self.tok.encode(text)

    def decode(self, ids):
        return self.tok.decode(ids)


def test_generate_cli_many_prompts_from_a_file(tok, tmp_path):
    from transformers import PreTrainedTokenizerFast

    hf = tiny_neox(seed=4, max_positions=64)
    hf.save_pretrained(tmp_path / "hf")
    eot = "<|endoftext|>"
    PreTrainedTokenizerFast(tokenizer_object=tok.hf, eos_token=eot, bos_token=eot).save_pretrained(
        tmp_path / "hf"
    )
    prompts_file = tmp_path / "prompts.jsonl"
    prompts_file.write_text("".join(json.dumps({"prompt": t}) + "\n" for t in TEXTS))
    res = run_gptx(
        "generate", "--checkpoint-path", str(tmp_path / "hf"), "--prompts-file", str(prompts_file),
        "--batch-size", "3", "--max-new-tokens", str(NEW), "--device", "cpu",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    assert [r["prompt"] for r in rows] == TEXTS
    model = _gptx(hf, tmp_path / "again")
    for row, text in zip(rows, TEXTS, strict=True):
        p = tok.encode(text)
        cfg = SamplingConfig(max_new_tokens=NEW, eos_id=tok.eos_id)
        assert row["tokens"] == generate(CachedDecoder(model, len(p) + NEW), tok, p, cfg).tokens
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a"}\n{"text": "b"}\n')
    res = run_gptx("generate", "--checkpoint-path", str(tmp_path / "hf"), "--prompts-file", str(bad))
    assert (
        res.returncode != 0
        and res.stderr.strip() == f"error: {bad}:2: expected an object with a string 'prompt'"
    )
