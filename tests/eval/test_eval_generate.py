"""`gptx generate`: greedy equals transformers generate token for token, sampling is seeded, the KV cache
matches recomputation, logits processing matches transformers' processors, stop sequences and streaming."""

from __future__ import annotations

import json

import pytest
import torch
from eval_helpers import run_gptx_with_stdin, tiny_gptj
from gptx_testing import run_gptx, shared_path

from gptx_cli.eval.generate import (
    CachedDecoder,
    GenerateOptions,
    RecomputeDecoder,
    SamplingConfig,
    generate,
    generate_from_checkpoint,
    process_logits,
)

PROMPT = "The quick brown fox jumps over the lazy"


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """A random HF GPT-J, and the same weights converted to a gptx checkpoint that records its tokenizer."""
    from gptx_cli import load_model
    from gptx_cli.checkpoint import save_checkpoint_dir

    root = tmp_path_factory.mktemp("gen")
    hf = tiny_gptj(seed=3)
    hf.save_pretrained(root / "hf")
    gptx_model = load_model(str(root / "hf"))
    tok_dir = shared_path("assets", "tokenizers", "gpt2")
    ckpt = save_checkpoint_dir(
        root / "model_dir" / "checkpoint_0",
        gptx_model.state_dict(),
        gptx_model.cfg,
        step=0,
        tokenizer=str(tok_dir),
    )
    from gptx_cli.data.tokenizer import load_tokenizer

    return hf, gptx_model, ckpt, load_tokenizer(str(tok_dir))


def hf_generate(hf, prompt_ids, **kwargs) -> list[int]:
    ids = torch.tensor([prompt_ids])
    out = hf.generate(
        ids, attention_mask=torch.ones_like(ids), pad_token_id=50256, eos_token_id=50256, **kwargs
    )
    return out[0, len(prompt_ids) :].tolist()


def test_greedy_cli_equals_transformers_generate_token_for_token(converted):
    hf, _, ckpt, tok = converted
    res = run_gptx(
        "generate",
        "--checkpoint-path",
        str(ckpt),
        "--prompt",
        PROMPT,
        "--max-new-tokens",
        "24",
        "--format",
        "json",
    )
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout)
    expected = hf_generate(hf, tok.encode(PROMPT), do_sample=False, max_new_tokens=24)
    assert got["prompt_tokens"] == tok.encode(PROMPT)
    assert got["tokens"] == expected
    # Streamed text mode prints the same text; a prompt piped on stdin loses the newline echo adds.
    res_text = run_gptx_with_stdin(
        PROMPT + "\n", "generate", "--checkpoint-path", str(ckpt), "--max-new-tokens", "24"
    )
    assert res_text.returncode == 0, res_text.stderr
    assert res_text.stdout == got["text"] + "\n"


def test_greedy_with_repetition_penalty_equals_transformers(converted):
    hf, gptx_model, _, tok = converted
    prompt = tok.encode(PROMPT)
    cfg = SamplingConfig(max_new_tokens=20, repetition_penalty=1.5, eos_id=50256)
    got = generate(CachedDecoder(gptx_model, len(prompt) + 20), tok, prompt, cfg)
    assert got.tokens == hf_generate(hf, prompt, do_sample=False, max_new_tokens=20, repetition_penalty=1.5)


def test_seeded_sampling_is_reproducible_and_the_cache_matches_recomputation(converted):
    _, gptx_model, ckpt, tok = converted
    sampling = dict(
        max_new_tokens=16, do_sample=True, temperature=0.9, top_k=400, top_p=0.95, repetition_penalty=1.1
    )

    def run(seed):
        opts = GenerateOptions(
            str(ckpt), PROMPT, device="cpu", sampling=SamplingConfig(seed=seed, **sampling)
        )
        return generate_from_checkpoint(opts, log=lambda _m: None).tokens

    first = run(7)
    assert run(7) == first
    assert run(8) != first
    prompt = tok.encode(PROMPT)
    recomputed = generate(
        RecomputeDecoder(gptx_model),
        tok,
        prompt,
        SamplingConfig(seed=7, eos_id=tok.eos_id, **sampling),
    )
    assert recomputed.tokens == first


def test_logits_processing_matches_transformers_processors():
    from transformers.generation.logits_process import (
        RepetitionPenaltyLogitsProcessor,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    torch.manual_seed(0)
    logits = torch.randn(1000) * 3
    seen = [5, 17, 17, 999, 3]
    cfg = SamplingConfig(do_sample=True, temperature=0.7, top_k=50, top_p=0.8, repetition_penalty=1.3)
    ids = torch.tensor([seen])
    ref = logits[None].clone()
    for proc in (
        RepetitionPenaltyLogitsProcessor(1.3),
        TemperatureLogitsWarper(0.7),
        TopKLogitsWarper(50),
        TopPLogitsWarper(0.8),
    ):
        ref = proc(ids, ref)
    got = process_logits(logits, seen, cfg)
    assert torch.equal(torch.isinf(got), torch.isinf(ref[0]))
    kept = ~torch.isinf(got)
    assert torch.allclose(got[kept], ref[0][kept], atol=1e-6)


class ScriptedModel:
    """A decoder that always predicts the next character of a fixed script (char-level tokens)."""

    eos_id = 0

    def __init__(self, script: str):
        self.script = script
        self.pos = 0

    def __call__(self, new_tokens):
        self.pos += len(new_tokens)
        logits = torch.zeros(256)
        index = self.pos - 1  # the prompt is one character
        logits[ord(self.script[index]) if index < len(self.script) else 0] = 10.0
        return logits

    def encode(self, text):
        return [ord(c) for c in text]

    def decode(self, ids):
        return "".join(chr(i) for i in ids)


def test_stop_sequences_end_the_text_and_are_never_streamed():
    script = "hello world. bye"
    model = ScriptedModel(script)
    pieces: list[str] = []
    res = generate(
        model, model, [ord(">")], SamplingConfig(max_new_tokens=40, stop=("world.",)), pieces.append
    )
    assert res.text == "hello " and res.stop_reason == "stop"
    assert "".join(pieces) == "hello "
    assert not any("w" in p for p in pieces)  # "w" could have started the stop sequence: held back
    model = ScriptedModel(script)
    res = generate(model, model, [ord(">")], SamplingConfig(max_new_tokens=40, eos_id=0))
    assert res.text == script and res.stop_reason == "eos" and res.tokens[-1] == 0


def test_bad_generate_input_is_a_usage_error(converted, tmp_path):
    _, _, ckpt, _ = converted
    res = run_gptx("generate", "--checkpoint-path", str(ckpt), "--prompt", "x", "--greedy", "--top-k", "5")
    assert res.returncode == 2 and "--greedy cannot be combined" in res.stderr
    res = run_gptx("generate", "--checkpoint-path", str(tmp_path), "--prompt", "x")
    assert res.returncode == 1 and "neither a gptx checkpoint" in res.stderr
