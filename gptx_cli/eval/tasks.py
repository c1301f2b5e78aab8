"""Tasks from local jsonl files, scored as EleutherAI's lm-evaluation-harness (0.4.x) scores the matching
harness task, byte for byte: the same prompt and continuation strings, token ids, truncation, few-shot
draws and metrics (docs/tasks.md names the harness source of each rule).

Four kinds of task (formats in docs/tasks.md):

- ``last_word`` (LAMBADA, output_type loglikelihood): ``acc`` (greedy) and ``perplexity``.
- ``multiple_choice`` (HellaSwag, PIQA, ARC): ``acc``, ``acc_norm``, optionally ``acc_mutual_info``.
- ``rolling`` (WikiText, loglikelihood_rolling): ``word_perplexity``, ``byte_perplexity``, ``bits_per_byte``.
- ``generate`` (generate_until): ``exact_match`` of the greedy text cut at the stop sequences.

Every metric comes with ``<metric>_stderr`` as the harness computes it (gptx_cli/eval/harness.py).
Log-likelihoods go through one function, ``logits_fn(input_ids [B, T]) -> logits [B, T, V]`` (or a gptx
Transformer), so the same code scores a gptx model, a transformers model (tests) or anything else.
"""

from __future__ import annotations

import json
import math
import os
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from gptx_cli.errors import DataError, UsageError
from gptx_cli.eval.harness import (
    AGGREGATIONS,
    DEFAULT_BOOTSTRAP_ITERS,
    DETOKENIZERS,
    as_harness_tokenizer,
    count_bytes,
    count_words,
    exact_match,
)
from gptx_cli.eval.harness import stderr as harness_stderr
from gptx_cli.model.vocab import TOKENIZER_HINT, check_token_ids

TASK_KINDS = ("last_word", "multiple_choice", "rolling", "generate")
# The harness seeds its few-shot sampler with 1234 (lm_eval.api.samplers / evaluator defaults).
DEFAULT_FEWSHOT_SEED = 1234


class TokenizerLike(Protocol):
    """What scoring needs from a tokenizer (gptx_cli.data.tokenizer.load_tokenizer returns one)."""

    eos_id: int | None

    def encode(self, text: str) -> list[int]: ...


LogitsFn = Callable[[Any], Any]  # torch.Tensor [B, T] long -> torch.Tensor [B, T, V]


# ---------------------------------------------------------------------------------------------------
# Request construction (harness semantics)


def encode_pair(
    tokenizer: TokenizerLike, context: str, continuation: str, prefix_token: int | None
) -> tuple[list[int], list[int]]:
    """Tokens of (context, continuation) as lm-eval's TemplateLM.loglikelihood builds them.

    Trailing spaces of the context move to the continuation; the continuation's tokens are those of
    the whole string after the context's tokens, so merges across the boundary count as continuation.
    An empty context is replaced by the prefix token (HFLM.prefix_token_id: BOS, else EOS), unless the
    continuation already starts with it. `tokenizer.encode` is HFLM.tok_encode (harness.HarnessTokenizer).
    """
    if context == "":
        continuation_enc = getattr(tokenizer, "encode_plain", tokenizer.encode)(continuation)
        if prefix_token is None:
            raise DataError("an empty context needs an end-of-text token; the tokenizer has none")
        if continuation_enc and continuation_enc[0] == prefix_token:
            return continuation_enc[:1], continuation_enc[1:]
        return [prefix_token], continuation_enc
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces > 0:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    whole_enc = tokenizer.encode(context + continuation)
    context_enc = tokenizer.encode(context)
    return context_enc, whole_enc[len(context_enc) :]


def rolling_token_windows(
    tokens: Sequence[int], prefix_token: int, max_seq_len: int, context_len: int = 1
) -> Iterator[tuple[list[int], list[int]]]:
    """lm-eval's get_rolling_token_windows followed by make_disjoint_window.

    Yields (context, continuation) pairs that together predict every token of `tokens` exactly once;
    the first window is conditioned on `prefix_token`, later ones on up to `max_seq_len` previous tokens.
    """
    if not 1 <= context_len <= max_seq_len:
        raise ValueError(f"context_len must be in [1, {max_seq_len}]")
    tokens = list(tokens)
    if not tokens:
        return
    pred_len = max_seq_len - context_len + 1
    first_len = min(max_seq_len, len(tokens))
    windows = [([prefix_token, *tokens[: first_len - 1]], tokens[:first_len])]
    predicted = first_len
    while predicted < len(tokens):
        window_pred_len = min(len(tokens) - predicted, pred_len)
        window_end = predicted + window_pred_len
        windows.append(
            (tokens[max(window_end - max_seq_len - 1, 0) : window_end - 1], tokens[predicted:window_end])
        )
        predicted += window_pred_len
    for inp, pred in windows:
        yield inp[: len(inp) - len(pred) + 1], pred


# ---------------------------------------------------------------------------------------------------
# Batched scoring


class LoglikelihoodScorer:
    """Scores (context tokens, continuation tokens) requests with one batched logits function
    (or a gptx Transformer, whose LM head then runs on the scored positions only).

    Requests are sorted longest first (as the harness does) so that a batch pads little; rows are
    right-padded, which a causal model cannot see. Only the continuation positions go through
    log_softmax (in float32), so a large vocabulary does not cost [B, T, V] of float32.
    """

    def __init__(self, logits_fn: LogitsFn, max_length: int, batch_size: int = 8, device: Any = "cpu"):
        if batch_size < 1:
            raise UsageError(f"--batch-size must be at least 1, got {batch_size}")
        self.logits_fn = logits_fn
        self.max_length = max_length
        self.batch_size = batch_size
        self.device = device
        self.tokens_scored = 0  # model input tokens, for throughput reports
        self.ids_from = "the tokenizer"  # named in the token-id range error
        self._logits_buffer: Any = None  # fp32 logits of the fused head (greedy=False), reused per batch

    # Scored positions go through the LM head and log_softmax at most this many at a time, and at most
    # _CHUNK_LOGITS logits (128 MiB of fp32) at a time on a gptx model, whose head's size is known.
    _CHUNK = 2048
    _CHUNK_LOGITS = 1 << 25

    def _chunk_rows(self) -> int:
        weight = getattr(self.logits_fn, "output_weight", None)
        return (
            self._CHUNK if weight is None else min(self._CHUNK, max(1, self._CHUNK_LOGITS // weight.shape[0]))
        )

    def _scorer(
        self, batch: Any, rows: Any, positions: Any, targets: Any, greedy: bool
    ) -> Callable[[int, int], Any]:
        """Run the batch; returns part(lo, hi) -> (log p(target) [n], wrong [n] or None) for the scored
        positions lo..hi (n = hi - lo; wrong: 1.0 where the target is not the argmax, greedy only).

        A gptx Transformer (it has `hidden_states` and `logits`) projects only the scored positions
        through the LM head, so [B, T, vocab] logits never exist. Without greedy, no fresh [n, vocab]
        tensor is made either: `model.loss.head_log_probs` writes the logits into one buffer reused
        across batches and takes log_softmax in place. Any other callable returns all logits, which are
        then sliced.
        """
        import torch

        model: Any = self.logits_fn
        if hasattr(model, "hidden_states") and hasattr(model, "logits"):
            hidden = model.hidden_states(batch)[rows, positions]
            if not greedy:
                from gptx_cli.model.loss import head_log_probs

                weight, bias, scale = model.output_weight, model.lm_head.bias, model.logits_scale

                def fused(lo: int, hi: int) -> tuple[Any, None]:
                    lp, self._logits_buffer = head_log_probs(
                        hidden[lo:hi], weight, bias, scale, targets[lo:hi], self._logits_buffer
                    )
                    return lp, None

                return fused

            def slice_logits(lo: int, hi: int) -> Any:
                return model.logits(hidden[lo:hi])
        else:
            all_logits = model(batch)

            def slice_logits(lo: int, hi: int) -> Any:
                return all_logits[rows[lo:hi], positions[lo:hi]]

        def part(lo: int, hi: int) -> tuple[Any, Any]:
            logits, tgt = slice_logits(lo, hi).float(), targets[lo:hi, None]
            if not greedy:
                return logits.gather(-1, tgt)[:, 0] - torch.logsumexp(logits, dim=-1), None
            logp = logits.log_softmax(dim=-1)
            return logp.gather(-1, tgt)[:, 0], (logp.argmax(dim=-1) != tgt[:, 0]).float()

        return part

    def loglikelihood_tokens(
        self, requests: Sequence[tuple[list[int], list[int]]], greedy: bool = True
    ) -> list[tuple[float, bool]]:
        """[(sum of log p(continuation | context), continuation == greedy decode)] in request order.

        All scored positions of a batch are gathered into one [N, hidden] block: one LM-head matmul and
        one float32 log_softmax per batch (in chunks), per-request sums by index_add, one host sync.
        `greedy=False` (rolling windows) skips the argmax (the flag is then always False) and takes
        log p = logit - logsumexp, on a gptx model without [N, vocab] logits (`_scorer`)."""
        import torch

        prepared = []
        for context, continuation in requests:
            if not continuation:
                raise DataError("a continuation encodes to zero tokens; nothing to score")
            # Harness: keep the last max_length+1 tokens and drop the final one (it is only a label).
            inp = (list(context) + list(continuation))[-(self.max_length + 1) :][:-1]
            cont = list(continuation)[-len(inp) :] if len(continuation) > len(inp) else list(continuation)
            prepared.append((inp, cont))
        self._check_ids(prepared)
        order = sorted(range(len(prepared)), key=lambda i: -len(prepared[i][0]))
        results: list[tuple[float, bool]] = [(0.0, False)] * len(prepared)
        chunk = self._chunk_rows()
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                idx = order[start : start + self.batch_size]
                width = max(len(prepared[i][0]) for i in idx)
                batch = torch.zeros((len(idx), width), dtype=torch.long)
                rows: list[int] = []
                positions: list[int] = []
                targets: list[int] = []
                for row, i in enumerate(idx):
                    inp, cont = prepared[i]
                    batch[row, : len(inp)] = torch.tensor(inp, dtype=torch.long)
                    rows += [row] * len(cont)
                    positions += range(len(inp) - len(cont), len(inp))
                    targets += cont
                dev = self.device
                rows_t = torch.tensor(rows, dtype=torch.long, device=dev)
                pos_t = torch.tensor(positions, dtype=torch.long, device=dev)
                tgt_t = torch.tensor(targets, dtype=torch.long, device=dev)
                part = self._scorer(batch.to(dev), rows_t, pos_t, tgt_t, greedy)
                self.tokens_scored += sum(len(prepared[i][0]) for i in idx)
                token_lp, wrong = [], []
                for lo in range(0, len(targets), chunk):
                    lp, miss = part(lo, min(lo + chunk, len(targets)))
                    token_lp.append(lp)
                    wrong.append(miss)
                sums = torch.zeros(len(idx), dtype=torch.float32, device=dev).index_add_(
                    0, rows_t, torch.cat(token_lp)
                )
                if not greedy:  # rolling windows: no greedy check, one host sync per batch
                    for i, ll in zip(idx, sums.tolist(), strict=True):
                        results[i] = (float(ll), False)
                    continue
                misses = torch.zeros(len(idx), dtype=torch.float32, device=dev).index_add_(
                    0, rows_t, torch.cat(wrong)
                )
                for i, ll, miss in zip(idx, sums.tolist(), misses.tolist(), strict=True):
                    results[i] = (float(ll), miss == 0)
        return results

    def _check_ids(self, prepared: Sequence[tuple[list[int], list[int]]]) -> None:
        vocab = getattr(getattr(self.logits_fn, "cfg", None), "vocab_size", None)
        ids = [t for inp, cont in prepared for part in (inp, cont) for t in part]
        if vocab is not None and ids:
            check_token_ids(min(ids), max(ids), int(vocab), self.ids_from, TOKENIZER_HINT)

    def loglikelihood_rolling(self, documents: Sequence[list[int]], prefix_token: int) -> list[float]:
        """Full log-likelihood of each token list through disjoint rolling windows (harness semantics)."""
        requests: list[tuple[list[int], list[int]]] = []
        owner: list[int] = []
        for doc_index, tokens in enumerate(documents):
            for window in rolling_token_windows(tokens, prefix_token, self.max_length, context_len=1):
                requests.append(window)
                owner.append(doc_index)
        totals = [0.0] * len(documents)
        for doc_index, (ll, _) in zip(owner, self.loglikelihood_tokens(requests, greedy=False), strict=True):
            totals[doc_index] += ll
        return totals


# ---------------------------------------------------------------------------------------------------
# Task files

HEADER_KEYS = {
    "name",
    "kind",
    "target_delimiter",
    "fewshot_delimiter",
    "description",
    "fewshot_pool",
    "detokenizer",
    "count_from",
    "metrics",
    "until",
    "max_gen_toks",
}
# Metrics each kind can report (the harness's names) and the default set (what the harness task lists).
KIND_METRICS = {
    "last_word": (("perplexity", "acc"), ("perplexity", "acc")),
    "multiple_choice": (("acc", "acc_norm", "acc_mutual_info"), ("acc", "acc_norm")),
    "rolling": (
        ("word_perplexity", "byte_perplexity", "bits_per_byte"),
        ("word_perplexity", "byte_perplexity", "bits_per_byte"),
    ),
    "generate": (("exact_match",), ("exact_match",)),
}
# The harness's aggregation of each metric (lm_eval/api/metrics.py registrations).
AGGREGATION_OF = {
    "perplexity": "perplexity",
    "acc": "mean",
    "acc_norm": "mean",
    "acc_mutual_info": "mean",
    "exact_match": "mean",
    "word_perplexity": "weighted_perplexity",
    "byte_perplexity": "weighted_perplexity",
    "bits_per_byte": "bits_per_byte",
}


@dataclass
class Task:
    """One task: its documents (validated), kind and prompt settings (docs/tasks.md)."""

    name: str
    kind: str
    path: str
    docs: list[dict[str, Any]]
    target_delimiter: str = " "
    fewshot_delimiter: str = "\n\n"
    description: str = ""
    fewshot_docs: list[dict[str, Any]] | None = None  # a separate pool (fewshot_pool); None: the docs
    detokenizer: str = "none"
    count_from: str | None = None
    metrics: tuple[str, ...] = ()
    until: list[str] | None = None
    max_gen_toks: int = 256

    def __post_init__(self) -> None:
        if not self.metrics:
            self.metrics = KIND_METRICS[self.kind][1]


@dataclass
class TaskResult:
    name: str
    kind: str
    num_docs: int
    num_fewshot: int
    metrics: dict[str, Any] = field(default_factory=dict)
    samples: list[dict[str, Any]] = field(default_factory=list)
    requests: int = 0
    per_doc: dict[str, list[Any]] = field(default_factory=dict)  # metric -> one item per document

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.name,
            "kind": self.kind,
            "num_docs": self.num_docs,
            "num_fewshot": self.num_fewshot,
            "metrics": self.metrics,
        }


def resolve_task_path(name_or_path: str, tasks_dir: str | None = None) -> Path:
    """A task argument is a jsonl path, or a name looked up as <dir>/<name>.jsonl.

    Directories searched: `tasks_dir` (--tasks-dir), then $GPTX_TASKS_DIR, then ./tasks.
    """
    path = Path(name_or_path)
    if path.is_file():
        return path
    dirs = [d for d in (tasks_dir, os.environ.get("GPTX_TASKS_DIR"), "tasks") if d]
    for d in dirs:
        candidate = Path(d) / f"{name_or_path}.jsonl"
        if candidate.is_file():
            return candidate
    looked = ", ".join(str(Path(d) / f"{name_or_path}.jsonl") for d in dirs)
    raise UsageError(f"task {name_or_path!r}: no such file (also looked for {looked})")


def _kind_of(record: dict[str, Any]) -> str | None:
    if "choices" in record:
        return "multiple_choice"
    if "answer" in record:
        return "generate"
    if "page" in record:
        return "rolling"
    if "text" in record:
        return "last_word"
    return None


def _gold_index(value: Any, choices: list[str], where: str) -> int:
    """One gold: an index (int, or a digit string as HellaSwag ships it) or the text of a choice."""
    if isinstance(value, str):
        if value in choices:
            return choices.index(value)
        if value.strip().lstrip("-").isdigit():
            value = int(value)
        else:
            raise DataError(f"{where}: gold {value!r} is neither one of the choices nor an index")
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < len(choices):
        raise DataError(f"{where}: 'gold' (or 'label') must be an index into the {len(choices)} choices")
    return value


def _check_doc(kind: str, record: dict[str, Any], where: str) -> dict[str, Any]:
    """Validate one record of a task file and return it normalised; errors name file:line."""
    if kind == "multiple_choice":
        query = record.get("query", record.get("context"))
        choices = record.get("choices")
        gold = record.get("gold", record.get("label"))
        if not isinstance(query, str):
            raise DataError(f"{where}: multiple_choice needs a string 'query' (or 'context')")
        if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) for c in choices):
            raise DataError(f"{where}: 'choices' must be a list of at least two strings")
        if any(len(c) == 0 for c in choices):
            raise DataError(f"{where}: a choice is empty (acc_norm divides by its length)")
        if isinstance(gold, list):
            if not gold:
                raise DataError(f"{where}: 'gold' is an empty list")
            golds = [_gold_index(g, choices, where) for g in gold]
            return {"query": query, "choices": choices, "gold": golds}
        return {"query": query, "choices": choices, "gold": _gold_index(gold, choices, where)}
    if kind == "generate":
        query = record.get("query", record.get("context"))
        answer = record.get("answer")
        if not isinstance(query, str):
            raise DataError(f"{where}: generate needs a string 'query' (or 'context')")
        if isinstance(answer, list):
            if not answer or not all(isinstance(a, str) for a in answer):
                raise DataError(f"{where}: 'answer' must be a string or a non-empty list of strings")
        elif not isinstance(answer, str):
            raise DataError(f"{where}: generate needs a string 'answer' (or a list of them)")
        return {"query": query, "answer": answer}
    key = "page" if kind == "rolling" and "page" in record and "text" not in record else "text"
    text = record.get(key)
    if not isinstance(text, str) or not text.strip():
        raise DataError(f"{where}: {kind} needs a non-empty string '{key}'")
    if kind == "last_word" and len(text.split(" ")) < 2:
        raise DataError(f"{where}: last_word needs at least two space-separated words in 'text'")
    out = {"text": text}
    if kind == "rolling":
        out.update({k: v for k, v in record.items() if k not in (key,) and isinstance(v, str)})
        out["raw"] = text
    return out


def _read_jsonl(
    path: Path, kind: str | None, allow_header: bool
) -> tuple[dict[str, Any], list[dict[str, Any]], str]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise UsageError(f"cannot read task file {path}: {err}") from err
    header: dict[str, Any] = {}
    docs: list[dict[str, Any]] = []
    for lineno, line in enumerate(lines, start=1):
        where = f"{path}:{lineno}"
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{where}: not valid JSON ({err.msg} at column {err.colno})") from err
        if not isinstance(record, dict):
            raise DataError(f"{where}: each line must be a JSON object, got {type(record).__name__}")
        if "gptx_task" in record:
            if not allow_header:
                raise DataError(f"{where}: a few-shot pool file takes no gptx_task header")
            if docs or header:
                raise DataError(f"{where}: the gptx_task header must be the first line")
            header = record["gptx_task"]
            if not isinstance(header, dict):
                raise DataError(f"{where}: gptx_task must be an object")
            unknown = set(header) - HEADER_KEYS
            if unknown:
                raise DataError(f"{where}: unknown gptx_task key(s) {', '.join(sorted(unknown))}")
            kind = header.get("kind")
            if kind not in KIND_METRICS:
                raise DataError(
                    f"{where}: gptx_task.kind must be one of {', '.join(TASK_KINDS)}, got {kind!r}"
                )
            _check_header(header, str(kind), where)
            continue
        if kind is None:
            kind = _kind_of(record)
            if kind is None:
                raise DataError(
                    f"{where}: cannot tell the task kind: expected 'choices' (multiple_choice), "
                    "'answer' (generate), 'page' (rolling) or 'text' (last_word)",
                    hint='or start the file with {"gptx_task": {"kind": ...}}',
                )
        docs.append(_check_doc(kind, record, where))
    if not docs:
        raise DataError(f"{path}: the task file has no documents")
    assert kind is not None
    return header, docs, kind


def _check_header(header: dict[str, Any], kind: str, where: str) -> None:
    for key in ("target_delimiter", "fewshot_delimiter", "description", "fewshot_pool", "count_from"):
        if key in header and not isinstance(header[key], str):
            raise DataError(f"{where}: gptx_task.{key} must be a string")
    if header.get("detokenizer", "none") not in DETOKENIZERS:
        raise DataError(
            f"{where}: gptx_task.detokenizer must be one of {', '.join(DETOKENIZERS)}, "
            f"got {header['detokenizer']!r}"
        )
    if ("detokenizer" in header or "count_from" in header) and kind != "rolling":
        raise DataError(f"{where}: gptx_task.detokenizer / count_from apply to rolling tasks only")
    if ("until" in header or "max_gen_toks" in header) and kind != "generate":
        raise DataError(f"{where}: gptx_task.until / max_gen_toks apply to generate tasks only")
    until = header.get("until")
    if until is not None and not (
        isinstance(until, str) or (isinstance(until, list) and all(isinstance(u, str) for u in until))
    ):
        raise DataError(f"{where}: gptx_task.until must be a string or a list of strings")
    max_gen = header.get("max_gen_toks", 256)
    if not isinstance(max_gen, int) or isinstance(max_gen, bool) or max_gen < 1:
        raise DataError(f"{where}: gptx_task.max_gen_toks must be a positive integer")
    metrics = header.get("metrics")
    if metrics is not None:
        allowed = KIND_METRICS[kind][0]
        if not isinstance(metrics, list) or not metrics or any(m not in allowed for m in metrics):
            raise DataError(
                f"{where}: gptx_task.metrics for {kind} must be a list drawn from {', '.join(allowed)}"
            )


def load_task(name_or_path: str, tasks_dir: str | None = None) -> Task:
    """Read and validate a task jsonl file (format: docs/tasks.md).

    An optional first line `{"gptx_task": {...}}` names the kind and the prompt settings; without it
    the kind follows from the first record's keys (choices -> multiple choice, answer -> generate,
    page -> rolling, text -> last word).
    """
    path = resolve_task_path(name_or_path, tasks_dir)
    header, docs, kind = _read_jsonl(path, None, allow_header=True)
    if "kind" in header:
        kind = str(header["kind"])
    fewshot_docs = None
    if header.get("fewshot_pool"):
        pool_path = Path(header["fewshot_pool"])
        if not pool_path.is_absolute():
            pool_path = path.parent / pool_path
        if not pool_path.is_file():
            raise DataError(f"{path}:1: gptx_task.fewshot_pool {pool_path} does not exist")
        _, fewshot_docs, _ = _read_jsonl(pool_path, kind, allow_header=False)
    count_from = header.get("count_from")
    if count_from is not None:
        missing = [i for i, d in enumerate(docs) if count_from not in d]
        if missing:
            raise DataError(
                f"{path}: count_from field {count_from!r} is missing in document {missing[0] + 1}"
            )
    until = header.get("until")
    return Task(
        name=str(header.get("name") or path.stem),
        kind=kind,
        path=str(path),
        docs=docs,
        target_delimiter=str(header.get("target_delimiter", " ")),
        fewshot_delimiter=str(header.get("fewshot_delimiter", "\n\n")),
        description=str(header.get("description", "")),
        fewshot_docs=fewshot_docs,
        detokenizer=str(header.get("detokenizer", "none")),
        count_from=count_from,
        metrics=tuple(header.get("metrics") or ()),
        until=[until] if isinstance(until, str) else until,
        max_gen_toks=int(header.get("max_gen_toks", 256)),
    )


# ---------------------------------------------------------------------------------------------------
# Prompts (lm_eval/api/task.py ConfigurableTask.fewshot_context / build_qa_turn, api/samplers.py)


def _last_word_split(text: str) -> tuple[str, str]:
    """lambada_openai.yaml: doc_to_text = words[:-1] joined by ' ', doc_to_target = ' ' + words[-1]."""
    words = text.split(" ")
    return " ".join(words[:-1]), " " + words[-1]


def _query_and_answer(task: Task, doc: dict[str, Any]) -> tuple[str, str]:
    """(doc_to_text, the answer text a solved example shows) for one document."""
    if task.kind == "multiple_choice":
        gold = doc["gold"]
        return doc["query"], doc["choices"][gold[0] if isinstance(gold, list) else gold]
    if task.kind == "generate":
        answer = doc["answer"]
        return doc["query"], answer[0] if isinstance(answer, list) else answer
    return _last_word_split(doc["text"])


def fewshot_context(task: Task, doc: dict[str, Any], num_fewshot: int, rnd: random.Random) -> str:
    """The prompt of one document: description, then `num_fewshot` solved examples, then its query.

    Examples are `rnd.sample(pool, num_fewshot)` (ContextSampler.sample with eval_doc=None: the harness
    passes the document only when a fewshot_split equal to the test split is configured; a task whose
    shots fall back to its own documents, like lambada_openai, may show a document its own answer),
    each rendered `query + target_delimiter + answer + fewshot_delimiter` (build_qa_turn; for
    lambada_openai the answer keeps its leading space, so query and answer meet with two spaces).
    """
    parts = [task.description]
    if num_fewshot > 0:
        pool = task.fewshot_docs if task.fewshot_docs is not None else task.docs
        if num_fewshot > len(pool):
            raise UsageError(
                f"task {task.name}: --num-fewshot {num_fewshot} exceeds the {len(pool)} documents of its "
                "few-shot pool"
            )
        for shot in rnd.sample(pool, num_fewshot):
            query, answer = _query_and_answer(task, shot)
            if answer != "":
                parts.append(query + task.target_delimiter + answer + task.fewshot_delimiter)
            else:
                parts.append(query)
    parts.append(_query_and_answer(task, doc)[0])
    return "".join(parts)


def limit_docs(n_docs: int, limit: float | None) -> int:
    """evaluator_utils.get_sample_size: a limit below 1.0 is a fraction (rounded up), else a count."""
    if limit is None:
        return n_docs
    if limit <= 0:
        raise UsageError(f"--limit must be > 0, got {limit}")
    n = int(math.ceil(n_docs * limit)) if limit < 1.0 else int(limit)
    return min(n, n_docs)


# ---------------------------------------------------------------------------------------------------
# Scoring

GenerateFn = Callable[[list[str], list[str], int], list[str]]  # (contexts, until, max_gen_toks) -> texts


def aggregate(result: TaskResult, bootstrap_iters: int = DEFAULT_BOOTSTRAP_ITERS) -> TaskResult:
    """Fill result.metrics from result.per_doc with the harness's aggregations and standard errors."""
    result.metrics = {}
    for metric, items in result.per_doc.items():
        agg = AGGREGATION_OF[metric]
        result.metrics[metric] = AGGREGATIONS[agg](items)
        result.metrics[f"{metric}_stderr"] = harness_stderr(agg, items, bootstrap_iters)
    return result


def evaluate_task(
    task: Task,
    scorer: LoglikelihoodScorer,
    tokenizer: TokenizerLike,
    *,
    limit: float | None = None,
    num_fewshot: int = 0,
    seed: int = DEFAULT_FEWSHOT_SEED,
    bootstrap_iters: int = DEFAULT_BOOTSTRAP_ITERS,
    generate_fn: GenerateFn | None = None,
    log_samples: bool = False,
    doc_range: tuple[int, int] | None = None,
) -> TaskResult:
    """Score one task; returns its metrics (harness names, with `<metric>_stderr`).

    `doc_range` (start, end) scores only those documents of the limited set (one shard of --nproc) and
    leaves the metrics to `aggregate` once the shards' per_doc lists are joined in order; prompts are
    still built for every document in order, so the few-shot draws do not depend on the sharding.
    """
    if num_fewshot < 0:
        raise UsageError(f"--num-fewshot must be >= 0, got {num_fewshot}")
    tok = as_harness_tokenizer(tokenizer)
    docs = task.docs[: limit_docs(len(task.docs), limit)]
    result = TaskResult(task.name, task.kind, len(docs), num_fewshot)
    lo, hi = doc_range if doc_range is not None else (0, len(docs))
    per_doc: dict[str, list[Any]] = {m: [] for m in task.metrics}
    result.per_doc = per_doc
    samples = result.samples

    if task.kind == "rolling":
        if num_fewshot:
            raise UsageError(f"task {task.name}: rolling (perplexity) tasks take no few-shot examples")
        detok = DETOKENIZERS[task.detokenizer]
        scored = [detok(d["text"]) for d in docs[lo:hi]]
        lls = scorer.loglikelihood_rolling([tok.encode(t) for t in scored], tok.prefix_token)
        result.requests = len(scored)
        for i, (doc, text, ll) in enumerate(zip(docs[lo:hi], scored, lls, strict=True)):
            counted = doc[task.count_from] if task.count_from else doc.get("raw", doc["text"])
            words, nbytes = count_words(counted), count_bytes(counted)
            rolled: dict[str, tuple[float, int]] = {
                "word_perplexity": (ll, words),
                "byte_perplexity": (ll, nbytes),
                "bits_per_byte": (ll, nbytes),
            }
            for m in task.metrics:
                per_doc[m].append(rolled[m])
            if log_samples:
                samples.append(
                    {"doc_id": lo + i, "doc": doc, "arguments": [[text]], "resps": [[ll]], **rolled}
                )
        return aggregate(result, bootstrap_iters) if doc_range is None else result

    rnd = random.Random(seed)
    contexts = [fewshot_context(task, doc, num_fewshot, rnd) for doc in docs][lo:hi]
    docs = docs[lo:hi]

    if task.kind == "generate":
        if generate_fn is None:
            raise UsageError(f"task {task.name}: generation needs a model that can generate")
        until = list(task.until) if task.until is not None else [task.fewshot_delimiter]
        outputs = generate_fn(contexts, until, task.max_gen_toks)
        result.requests = len(contexts)
        for i, (doc, ctx, out) in enumerate(zip(docs, contexts, outputs, strict=True)):
            golds = doc["answer"] if isinstance(doc["answer"], list) else [doc["answer"]]
            em = float(any(exact_match(out, g) for g in golds))
            per_doc["exact_match"].append(em)
            if log_samples:
                samples.append(
                    {
                        "doc_id": lo + i,
                        "doc": doc,
                        "arguments": [[ctx, {"until": until, "max_gen_toks": task.max_gen_toks}]],
                        "resps": [[out]],
                        "target": doc["answer"],
                        "exact_match": em,
                    }
                )
        return aggregate(result, bootstrap_iters) if doc_range is None else result

    requests: list[tuple[list[int], list[int]]] = []
    arguments: list[list[tuple[str, str]]] = []
    if task.kind == "last_word":
        for doc, ctx in zip(docs, contexts, strict=True):
            target = _last_word_split(doc["text"])[1]
            requests.append(encode_pair(tok, ctx, target, tok.prefix_token))
            arguments.append([(ctx, target)])
        results = scorer.loglikelihood_tokens(requests)
        result.requests = len(requests)
        for i, (doc, (ll, greedy)) in enumerate(zip(docs, results, strict=True)):
            lw_values: dict[str, float] = {"perplexity": ll, "acc": int(greedy)}
            for m in task.metrics:
                per_doc[m].append(lw_values[m])
            if log_samples:
                samples.append(
                    {
                        "doc_id": lo + i,
                        "doc": doc,
                        "arguments": arguments[i],
                        "resps": [[ll, greedy]],
                        **lw_values,
                    }
                )
        return aggregate(result, bootstrap_iters) if doc_range is None else result

    mutual = "acc_mutual_info" in task.metrics
    spans: list[tuple[int, int]] = []
    for doc, ctx in zip(docs, contexts, strict=True):
        start = len(requests)
        args = [(ctx, task.target_delimiter + choice) for choice in doc["choices"]]
        if mutual:  # ConfigurableTask.construct_requests: unconditional ("", delimiter + choice)
            args += [("", task.target_delimiter + choice) for choice in doc["choices"]]
        for c, t in args:
            requests.append(encode_pair(tok, c, t, tok.prefix_token))
        arguments.append(args)
        spans.append((start, len(requests)))
    results = scorer.loglikelihood_tokens(requests)
    result.requests = len(requests)
    for i, (doc, (start, end)) in enumerate(zip(docs, spans, strict=True)):
        n = len(doc["choices"])
        lls = [ll for ll, _ in results[start : start + n]]
        gold = doc["gold"]
        golds = gold if isinstance(gold, list) else [gold]
        # np.argmax semantics: the first maximum wins ties.
        pred = lls.index(max(lls))
        normed = [ll / float(len(c)) for ll, c in zip(lls, doc["choices"], strict=True)]
        pred_norm = normed.index(max(normed))
        mc_values: dict[str, float] = {"acc": float(pred in golds), "acc_norm": float(pred_norm in golds)}
        if mutual:
            uncond = [ll for ll, _ in results[start + n : end]]
            mi = [c - u for c, u in zip(lls, uncond, strict=True)]
            mc_values["acc_mutual_info"] = float(mi.index(max(mi)) in golds)
        for m in task.metrics:
            per_doc[m].append(mc_values[m])
        if log_samples:
            samples.append(
                {
                    "doc_id": lo + i,
                    "doc": doc,
                    "target": gold,
                    "arguments": arguments[i],
                    "resps": [[ll, g] for ll, g in results[start:end]],
                    **mc_values,
                }
            )
    return aggregate(result, bootstrap_iters) if doc_range is None else result
