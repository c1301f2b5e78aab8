"""lm-evaluation-harness (0.4.x) definitions that gptx reproduces without importing it: the prefix token
the `hf` model picks, its tokenizer calls, WikiText's detokenizer and counts, the aggregations, their
standard errors, and `exact_match`. Each function names the harness source it follows; docs/tasks.md
lists them. `lm_eval` itself stays optional (tests compare against it).
"""

from __future__ import annotations

import json
import math
import random
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

# lm_eval/tasks/wikitext/preprocess_wikitext.py `wikitext_detokenizer` has ModelZoo's (Megatron's) rules,
# character for character: one copy.
from gptx_cli.data.textclean import wikitext_detokenizer

DEFAULT_BOOTSTRAP_ITERS = 100000  # lm_eval.evaluator.simple_evaluate(bootstrap_iters=100000)


# ---------------------------------------------------------------------------------------------------
# The tokenizer as lm_eval.models.huggingface.HFLM sees it


def _special_token(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return str(value["content"])
    return None


def configured_bos_token(tokenizer: Any) -> str | None:
    """The `bos_token` transformers' AutoTokenizer would give this tokenizer: tokenizer_config.json, then
    special_tokens_map.json, next to the tokenizer's files; a GPT-2 file set (GPT2TokenizerFast) defaults
    to `<|endoftext|>`; otherwise None."""
    source = getattr(tokenizer, "source", None)
    if not source:
        return None
    path = Path(source)
    folder = path if path.is_dir() else path.parent
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        try:
            data = json.loads((folder / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and "bos_token" in data:
            return _special_token(data["bos_token"])
    if path.is_dir() and not any((folder / n).is_file() for n in ("tokenizer.json", "neox-encoder.json")):
        return "<|endoftext|>"  # GPT2TokenizerFast(vocab_file, merges_file): bos = eos = <|endoftext|>
    return None


def prefix_token_id(tokenizer: Any) -> int:
    """HFLM.prefix_token_id: the tokenizer's BOS when it has one, else its EOS (end of text)."""
    bos = configured_bos_token(tokenizer)
    token_to_id = getattr(tokenizer, "token_to_id", None)
    if bos is not None and token_to_id is not None:
        found = token_to_id(bos)
        if found is not None:
            return int(found)
    return int(tokenizer.eos_id)


class HarnessTokenizer:
    """A gptx tokenizer with HFLM's `tok_encode` semantics: the tokenizer's own special tokens are added
    (as `tokenizer.encode(text)` does in transformers: its post-processor, e.g. a BOS) unless the text
    already starts with the prefix token's text; `encode_plain` adds none (the empty-context case)."""

    def __init__(self, tokenizer: Any, prefix_token: int | None = None):
        self.tok = tokenizer
        self.eos_id = tokenizer.eos_id
        self.prefix_token = prefix_token_id(tokenizer) if prefix_token is None else int(prefix_token)
        hf = getattr(tokenizer, "hf", None)
        self._hf = hf if hf is not None and hf.encode("", add_special_tokens=True).ids else None
        self._prefix_text = self.decode([self.prefix_token]) if hasattr(tokenizer, "decode") else ""

    def encode(self, text: str) -> list[int]:
        if self._hf is not None and not (self._prefix_text and text.startswith(self._prefix_text)):
            return list(self._hf.encode(text, add_special_tokens=True).ids)
        return list(self.tok.encode(text))

    def encode_plain(self, text: str) -> list[int]:
        return list(self.tok.encode(text))

    def decode(self, ids: Sequence[int]) -> str:
        return str(self.tok.decode(list(ids)))


def as_harness_tokenizer(tokenizer: Any) -> HarnessTokenizer:
    return tokenizer if isinstance(tokenizer, HarnessTokenizer) else HarnessTokenizer(tokenizer)


# ---------------------------------------------------------------------------------------------------
# WikiText (lm_eval/tasks/wikitext/preprocess_wikitext.py)


DETOKENIZERS: dict[str, Callable[[str], str]] = {"none": lambda s: s, "wikitext": wikitext_detokenizer}


def count_words(text: str) -> int:
    """lm_eval.api.task.Task.count_words (and the wikitext task's process_results)."""
    return len(re.split(r"\s+", text))


def count_bytes(text: str) -> int:
    return len(text.encode("utf-8"))


# ---------------------------------------------------------------------------------------------------
# Aggregations and standard errors (lm_eval/api/metrics.py, lm_eval/evaluator_utils.py)


def mean(arr: Sequence[float]) -> float:
    return sum(arr) / len(arr)


def perplexity(items: Sequence[float]) -> float:
    return math.exp(-mean(items))


def weighted_mean(items: Sequence[tuple[float, float]]) -> float:
    a, b = zip(*items, strict=True)
    return sum(a) / sum(b)


def weighted_perplexity(items: Sequence[tuple[float, float]]) -> float:
    return math.exp(-weighted_mean(items))


def bits_per_byte(items: Sequence[tuple[float, float]]) -> float:
    return -weighted_mean(items) / math.log(2)


def sample_stddev(arr: Sequence[float]) -> float:
    mu = mean(arr)
    return math.sqrt(sum([(x - mu) ** 2 for x in arr]) / (len(arr) - 1))


def mean_stderr(arr: Sequence[float]) -> float:
    return sample_stddev(arr) / math.sqrt(len(arr))


def bootstrap_stderr(f: Callable[[Sequence[Any]], float], xs: Sequence[Any], iters: int) -> float:
    """The harness's bootstrap: iters // chunk chunks, chunk i drawn with random.Random(i) (the
    multiprocessing and single-process paths give the same draws), then the sample stddev."""
    res = []
    chunk_size = min(1000, iters)
    for i in range(iters // chunk_size):
        rnd = random.Random(i)
        for _ in range(chunk_size):
            res.append(f(rnd.choices(xs, k=len(xs))))
    return sample_stddev(res)


AGGREGATIONS: dict[str, Callable[[Any], float]] = {
    "mean": mean,
    "perplexity": perplexity,
    "weighted_perplexity": weighted_perplexity,
    "bits_per_byte": bits_per_byte,
}


def stderr(aggregation: str, items: Sequence[Any], bootstrap_iters: int) -> float | str:
    """`<metric>_stderr` as evaluator_utils computes it: mean -> mean_stderr, perplexity -> bootstrap,
    weighted aggregations -> "N/A"; "N/A" too for one item or bootstrap_iters 0."""
    if bootstrap_iters <= 0 or len(items) <= 1:
        return "N/A"
    if aggregation == "mean":
        return mean_stderr(items)
    if aggregation == "perplexity":
        return bootstrap_stderr(perplexity, items, bootstrap_iters)
    return "N/A"


def exact_match(prediction: str, reference: str) -> float:
    """lm_eval.api.metrics.exact_match_hf_evaluate for one pair, default options (no case folding,
    punctuation or regex stripping)."""
    return float(prediction == reference)
