"""Task scoring: harness request construction, batching, metrics; checked against hand computations
and against the same computation done directly with transformers logits."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from eval_helpers import BpeTokenizer, hf_continuation_ll, hf_logits_fn, tiny_neox

from gptx_cli.errors import DataError, UsageError
from gptx_cli.eval.tasks import (
    LoglikelihoodScorer,
    Task,
    encode_pair,
    evaluate_task,
    load_task,
    rolling_token_windows,
)

DATA = Path(__file__).parent / "data"


class CharTokenizer:
    """One token per character (ord), end-of-text = 0: token counts are obvious by eye."""

    eos_id = 0

    def encode(self, text: str) -> list[int]:
        return [ord(c) for c in text]


def next_char_logits_fn(p_next: float = 0.9, vocab: int = 128):
    """A hand-built model: after character c it puts probability p_next on chr(ord(c)+1), the rest uniform."""
    rest = math.log((1 - p_next) / (vocab - 1))
    hit = math.log(p_next)

    def logits_fn(input_ids: torch.Tensor) -> torch.Tensor:
        logits = torch.full((*input_ids.shape, vocab), rest)
        nxt = (input_ids + 1).clamp(max=vocab - 1)
        logits.scatter_(-1, nxt[..., None], hit)
        return logits

    return logits_fn, hit, rest


def test_rolling_windows_match_the_harness_docstring_example():
    windows = list(rolling_token_windows(list(range(9)), prefix_token=-1, max_seq_len=3, context_len=2))
    assert windows == [([-1], [0, 1, 2]), ([1, 2], [3, 4]), ([3, 4], [5, 6]), ([5, 6], [7, 8])]


def test_rolling_windows_predict_every_token_once_with_full_context():
    tokens = list(range(100, 123))
    windows = list(rolling_token_windows(tokens, prefix_token=7, max_seq_len=5))
    assert [t for _, pred in windows for t in pred] == tokens
    for ctx, pred in windows[1:]:
        assert len(ctx) + len(pred) - 1 == 5  # each later window fills the whole context


def test_encode_pair_moves_trailing_space_into_the_continuation():
    tok = CharTokenizer()
    assert encode_pair(tok, "ab ", "c", prefix_token=0) == ([97, 98], [32, 99])
    assert encode_pair(tok, "", "xy", prefix_token=0) == ([0], [120, 121])


def test_multiple_choice_acc_and_acc_norm_on_a_hand_built_model():
    logits_fn, hit, rest = next_char_logits_fn(p_next=0.5)
    tok = CharTokenizer()
    # After "a" the model expects "b", then "c", ... Choice "x" is one unlikely token; choice
    # "bcdefghijklm" is twelve likely ones: smaller in sum, larger per character.
    doc = {"query": "a", "choices": ["x", "bcdefghijklm"], "gold": 1}
    task = Task(name="t", kind="multiple_choice", path="-", docs=[doc], target_delimiter="")
    scorer = LoglikelihoodScorer(logits_fn, max_length=64, batch_size=2)
    ll_x = rest  # a -> x
    ll_long = 12 * hit  # a->b->c->...->m all predicted
    assert ll_long < ll_x  # summed: the one-token choice wins
    assert ll_long / 12 > ll_x / 1  # per character: the long choice wins
    res = evaluate_task(task, scorer, tok)
    # One document: the harness reports the standard errors as "N/A".
    assert res.metrics == {"acc": 0.0, "acc_norm": 1.0, "acc_stderr": "N/A", "acc_norm_stderr": "N/A"}
    lls = scorer.loglikelihood_tokens([encode_pair(tok, "a", c, 0) for c in doc["choices"]])
    assert lls[0][0] == pytest.approx(ll_x, abs=1e-4) and lls[1][0] == pytest.approx(ll_long, abs=1e-4)
    assert lls[1][1] is True and lls[0][1] is False


def test_last_word_acc_and_perplexity_on_a_hand_built_model():
    logits_fn, hit, rest = next_char_logits_fn()
    tok = CharTokenizer()
    # target " bc": " " after "a" (rest), "b" after " " (rest), "c" after "b" (hit); not greedy.
    # target " !"  after "x y": " " after "y" (rest), "!" after " " (hit: chr(33)); not greedy either.
    task = Task(name="lw", kind="last_word", path="-", docs=[{"text": "x a bc"}, {"text": "x y !"}])
    res = evaluate_task(task, LoglikelihoodScorer(logits_fn, max_length=64), tok)
    lls = [2 * rest + hit, rest + hit]
    assert res.metrics["acc"] == 0.0
    assert res.metrics["perplexity"] == pytest.approx(math.exp(-sum(lls) / 2), rel=1e-4)


def test_rolling_perplexity_metrics_on_a_hand_built_model():
    logits_fn, hit, rest = next_char_logits_fn()
    tok = CharTokenizer()
    text = "abcd efg"  # after prefix 0: 'a' is rest; b,c,d hit; ' ' rest; 'e' rest; f,g hit
    ll = 3 * rest + 5 * hit
    task = Task(name="w", kind="rolling", path="-", docs=[{"text": text}])
    for max_length in (64, 3):  # windowing must not change a context-free (bigram) model's score
        res = evaluate_task(task, LoglikelihoodScorer(logits_fn, max_length=max_length), tok)
        assert res.metrics["word_perplexity"] == pytest.approx(math.exp(-ll / 2), rel=1e-4)
        assert res.metrics["byte_perplexity"] == pytest.approx(math.exp(-ll / 8), rel=1e-4)
        assert res.metrics["bits_per_byte"] == pytest.approx(-ll / 8 / math.log(2), rel=1e-4)


@pytest.fixture(scope="module")
def neox_and_tok():
    from gptx_testing import shared_path

    return tiny_neox(max_positions=64), BpeTokenizer(shared_path("assets", "tokenizers", "gpt2"))


def test_batched_scores_equal_unbatched_transformers_computation(neox_and_tok):
    model, tok = neox_and_tok
    task = load_task(str(DATA / "choice_tiny.jsonl"))
    scorer = LoglikelihoodScorer(hf_logits_fn(model), max_length=64, batch_size=3)
    requests = [encode_pair(tok, d["query"], " " + c, tok.eos_id) for d in task.docs for c in d["choices"]]
    got = scorer.loglikelihood_tokens(requests)
    for (ctx, cont), (ll, greedy) in zip(requests, got, strict=True):
        ref_ll, ref_greedy = hf_continuation_ll(model, ctx, cont)
        assert ll == pytest.approx(ref_ll, abs=1e-4)
        assert greedy == ref_greedy
    # Metrics from the reference log-likelihoods, computed the harness way.
    res = evaluate_task(task, scorer, tok)
    acc = acc_norm = 0
    for d in task.docs:
        lls = [
            hf_continuation_ll(model, *encode_pair(tok, d["query"], " " + c, tok.eos_id))[0]
            for c in d["choices"]
        ]
        acc += int(max(range(len(lls)), key=lambda i: lls[i]) == d["gold"])
        normed = [ll / len(c) for ll, c in zip(lls, d["choices"], strict=True)]
        acc_norm += int(max(range(len(lls)), key=lambda i: normed[i]) == d["gold"])
    assert (res.metrics["acc"], res.metrics["acc_norm"]) == (acc / 4, acc_norm / 4)


def test_lambada_scores_equal_transformers_computation_with_few_shot(neox_and_tok):
    model, tok = neox_and_tok
    task = load_task(str(DATA / "lambada_tiny.jsonl"))
    assert task.kind == "last_word"
    scorer = LoglikelihoodScorer(hf_logits_fn(model), max_length=64, batch_size=4)
    res0 = evaluate_task(task, scorer, tok, limit=4)
    lls = []
    for d in task.docs[:4]:
        words = d["text"].split(" ")
        lls.append(hf_continuation_ll(model, *encode_pair(tok, " ".join(words[:-1]), " " + words[-1], 50256)))
    assert res0.num_docs == 4
    assert res0.metrics["perplexity"] == pytest.approx(math.exp(-sum(ll for ll, _ in lls) / 4), rel=1e-5)
    assert res0.metrics["acc"] == sum(g for _, g in lls) / 4
    res2 = evaluate_task(task, scorer, tok, num_fewshot=2)
    assert res2.num_fewshot == 2 and res2.metrics["perplexity"] != res0.metrics["perplexity"]
    # Few-shot sampling is seeded: the same call gives the same numbers.
    assert evaluate_task(task, scorer, tok, num_fewshot=2).metrics == res2.metrics


def test_rolling_equals_non_windowed_when_the_document_fits(neox_and_tok):
    model, tok = neox_and_tok
    task = load_task(str(DATA / "wiki_tiny.jsonl"))
    assert task.kind == "rolling"
    docs = [tok.encode(d["text"]) for d in task.docs]
    assert max(len(d) for d in docs) < 64
    rolled = LoglikelihoodScorer(hf_logits_fn(model), max_length=64, batch_size=2).loglikelihood_rolling(
        docs, tok.eos_id
    )
    for doc, ll in zip(docs, rolled, strict=True):
        ref, _ = hf_continuation_ll(model, [tok.eos_id], doc)
        assert ll == pytest.approx(ref, abs=1e-4)
    # A short context forces windows; each window is the same computation on its own slice.
    windowed = LoglikelihoodScorer(hf_logits_fn(model), max_length=8).loglikelihood_rolling(
        docs[:1], tok.eos_id
    )
    ref = sum(hf_continuation_ll(model, c, p)[0] for c, p in rolling_token_windows(docs[0], tok.eos_id, 8))
    assert windowed[0] == pytest.approx(ref, abs=1e-4)
    res = evaluate_task(task, LoglikelihoodScorer(hf_logits_fn(model), max_length=64), tok)
    total = sum(rolled)
    nbytes = sum(len(d["text"].encode()) for d in task.docs)
    assert res.metrics["bits_per_byte"] == pytest.approx(-total / nbytes / math.log(2), rel=1e-5)


def test_fused_head_log_probs_are_log_softmax_of_the_heads_logits():
    """Rolling windows on a gptx model take log p(target) from `head_log_probs` (logits written into a
    reused buffer, log_softmax in place): the values of log_softmax on the head's logits, with bias,
    muP scale, a reused or grown buffer, and bf16."""
    import torch.nn.functional as F

    from gptx_cli.model.loss import head_log_probs

    g = torch.Generator().manual_seed(0)
    hidden, weight = torch.randn(37, 16, generator=g), torch.randn(300, 16, generator=g)
    bias, targets = torch.randn(300, generator=g), torch.randint(0, 300, (37,), generator=g)
    buffer = None
    for n, b, scale in [(20, None, None), (37, bias, 0.5), (5, bias, None)]:
        logits = F.linear(hidden[:n], weight, b) * (1.0 if scale is None else scale)
        ref = logits.log_softmax(-1).gather(1, targets[:n, None])[:, 0]
        got, new_buffer = head_log_probs(hidden[:n], weight, b, scale, targets[:n], buffer)
        torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-6)
        assert new_buffer.numel() >= n * 300
        assert (new_buffer is buffer) == (buffer is not None and buffer.numel() >= n * 300)
        buffer = new_buffer
    hb, wb = hidden.bfloat16(), weight.bfloat16()
    ref = F.linear(hb, wb).float().log_softmax(-1).gather(1, targets[:, None])[:, 0]
    got, _ = head_log_probs(hb, wb, None, None, targets, buffer)
    assert got.dtype == torch.float32 and torch.equal(got, ref)


def test_rolling_on_a_gptx_model_equals_the_transformers_logits(neox_and_tok, tmp_path):
    from gptx_cli import load_model

    model, tok = neox_and_tok
    model.save_pretrained(tmp_path / "hf")
    ours = load_model(str(tmp_path / "hf"))
    docs = [tok.encode(d["text"]) for d in load_task(str(DATA / "wiki_tiny.jsonl")).docs]
    ref = LoglikelihoodScorer(hf_logits_fn(model), max_length=8, batch_size=3).loglikelihood_rolling(
        docs, tok.eos_id
    )
    scorer = LoglikelihoodScorer(ours, max_length=8, batch_size=3)
    scorer._CHUNK_LOGITS = 5 * 50257  # several head chunks per batch, through one reused buffer
    got = scorer.loglikelihood_rolling(docs, tok.eos_id)
    assert got == pytest.approx(ref, rel=1e-5)


def test_malformed_task_line_names_file_and_line():
    with pytest.raises(DataError, match=r"bad_line\.jsonl:2: not valid JSON"):
        load_task(str(DATA / "bad_line.jsonl"))
    with pytest.raises(DataError, match=r"bad_gold\.jsonl:3: 'gold'"):
        load_task(str(DATA / "bad_gold.jsonl"))


def test_task_names_resolve_in_the_tasks_dir(tmp_path):
    (tmp_path / "mine.jsonl").write_text(json.dumps({"page": "some text here"}) + "\n")
    assert load_task("mine", tasks_dir=str(tmp_path)).kind == "rolling"
    with pytest.raises(UsageError, match="no such file"):
        load_task("absent", tasks_dir=str(tmp_path))
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(DataError, match="no documents"):
        load_task(str(tmp_path / "empty.jsonl"))


def test_limit_below_one_is_a_fraction_rounded_up_as_the_harness():
    from gptx_cli.eval.tasks import limit_docs

    assert [limit_docs(10, x) for x in (None, 3, 3.0, 0.25, 0.5, 0.99, 1.0, 20)] == [
        10,
        3,
        3,
        3,
        5,
        10,
        1,
        10,
    ]
    with pytest.raises(UsageError):
        limit_docs(10, 0)
    logits_fn, _, _ = next_char_logits_fn()
    task = Task(name="lw", kind="last_word", path="-", docs=[{"text": f"x a{i} b"} for i in range(7)])
    res = evaluate_task(task, LoglikelihoodScorer(logits_fn, max_length=64), CharTokenizer(), limit=0.3)
    assert res.num_docs == 3  # ceil(7 * 0.3)
