"""Parity with lm-evaluation-harness itself: gptx's lm-eval model (a converted checkpoint) against the
harness's own HFLM on the original transformers model, on the same requests. Runs only where the
optional `lm_eval` package is importable (it is not a gptx dependency)."""

from __future__ import annotations

import pytest
from eval_helpers import tiny_gptj
from gptx_testing import shared_path

pytest.importorskip("lm_eval.models.huggingface", reason="lm-eval (optional) is not installed")

CONTEXTS = [
    ("Question: What color is the sky?\nAnswer:", " blue"),
    ("Question: What color is the sky?\nAnswer:", " a loud noise"),
    ("The cat sat on the mat and looked at the", " dog"),
    ("", "Hello there"),
    ("Trailing space ", "word"),
]
DOCS = ["The game began development in 2010 , carrying over a large portion of the work .\n" * 6, "short doc"]


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    from lm_eval.models.huggingface import HFLM
    from transformers import PreTrainedTokenizerFast

    from gptx_cli import load_model
    from gptx_cli.checkpoint import save_checkpoint_dir
    from gptx_cli.data.tokenizer import load_tokenizer
    from gptx_cli.eval.lm_eval_adapter import register

    root = tmp_path_factory.mktemp("lmeval")
    tok_dir = shared_path("assets", "tokenizers", "gpt2")
    hf = tiny_gptj(seed=11)
    hf.save_pretrained(root / "hf")
    ours = load_model(str(root / "hf"))
    ckpt = save_checkpoint_dir(
        root / "md" / "checkpoint_0", ours.state_dict(), ours.cfg, step=0, tokenizer=str(tok_dir)
    )
    eot = "<|endoftext|>"
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=load_tokenizer(tok_dir).hf, eos_token=eot, bos_token=eot
    )
    reference = HFLM(pretrained=hf, tokenizer=hf_tok, batch_size=3, device="cpu", max_length=64)
    gptx_lm = register()(checkpoint=str(ckpt), device="cpu", batch_size=2)
    return reference, gptx_lm


def requests(kind, args_list):
    from lm_eval.api.instance import Instance

    return [Instance(request_type=kind, doc={}, arguments=args, idx=i) for i, args in enumerate(args_list)]


def test_loglikelihood_equals_the_harness_hf_model(pair):
    reference, gptx_lm = pair
    ref = reference.loglikelihood(requests("loglikelihood", CONTEXTS))
    got = gptx_lm.loglikelihood(requests("loglikelihood", CONTEXTS))
    for (ll, greedy), (ref_ll, ref_greedy) in zip(got, ref, strict=True):
        assert ll == pytest.approx(ref_ll, abs=1e-4)
        assert greedy == ref_greedy


def test_rolling_loglikelihood_equals_the_harness_hf_model(pair):
    reference, gptx_lm = pair
    ref = reference.loglikelihood_rolling(requests("loglikelihood_rolling", [(d,) for d in DOCS]))
    got = gptx_lm.loglikelihood_rolling(requests("loglikelihood_rolling", [(d,) for d in DOCS]))
    assert got == pytest.approx(ref, abs=1e-3)


def test_generate_until_equals_the_harness_hf_model(pair):
    reference, gptx_lm = pair
    args = [("Once upon a time", {"until": ["\n\n", " the"], "max_gen_toks": 12, "do_sample": False})]
    assert gptx_lm.generate_until(requests("generate_until", args)) == reference.generate_until(
        requests("generate_until", args)
    )
