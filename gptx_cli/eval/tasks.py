"""Zero-shot (and few-shot) tasks from local jsonl files, scored as EleutherAI's lm-evaluation-harness does.

Three kinds of task (formats in docs/tasks.md):

- ``last_word`` (LAMBADA): context = the text without its last space-separated word, target = " " + that
  word. Metrics: ``acc`` (the target is the greedy continuation, token for token) and ``perplexity``
  = exp(-mean over documents of the target's log-likelihood), the harness's `perplexity` aggregation.
- ``multiple_choice`` (HellaSwag, PIQA, ARC): one log-likelihood per choice, each scored as
  ``(query, target_delimiter + choice)``. ``acc`` = argmax of the summed log-likelihoods, ``acc_norm`` =
  argmax of log-likelihood / len(choice) in characters (the harness's `completion_len`).
- ``rolling`` (WikiText): the whole document's log-likelihood through disjoint rolling windows of the
  model's context (prefix = end-of-text token). ``word_perplexity`` = exp(-sum ll / sum words),
  ``byte_perplexity`` = exp(-sum ll / sum UTF-8 bytes), ``bits_per_byte`` = -sum ll / sum bytes / ln 2.

Everything is scored through one function, ``logits_fn(input_ids [B, T]) -> logits [B, T, V]``, so the
same code scores a gptx model, a transformers model (tests) or anything else.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from gptx_cli.errors import DataError, UsageError

TASK_KINDS = ("last_word", "multiple_choice", "rolling")
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
    An empty context is replaced by the prefix (end-of-text) token.
    """
    if context == "":
        continuation_enc = tokenizer.encode(continuation)
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

    def _forward(self, batch: Any) -> Callable[[int, int, int], Any]:
        """Run the batch; returns rows(row, start, end) -> logits [end - start, V].

        A gptx Transformer (it has `hidden_states` and `logits`) projects only the scored positions
        through the LM head, so [B, T, vocab] logits never exist; any other callable returns them all.
        """
        model = self.logits_fn
        if hasattr(model, "hidden_states") and hasattr(model, "logits"):
            hidden = model.hidden_states(batch)
            return lambda row, start, end: model.logits(hidden[row, start:end])
        logits = model(batch)
        return lambda row, start, end: logits[row, start:end]

    def loglikelihood_tokens(
        self, requests: Sequence[tuple[list[int], list[int]]]
    ) -> list[tuple[float, bool]]:
        """[(sum of log p(continuation | context), continuation == greedy decode)] in request order."""
        import torch

        prepared = []
        for context, continuation in requests:
            if not continuation:
                raise DataError("a continuation encodes to zero tokens; nothing to score")
            # Harness: keep the last max_length+1 tokens and drop the final one (it is only a label).
            inp = (list(context) + list(continuation))[-(self.max_length + 1) :][:-1]
            cont = list(continuation)[-len(inp) :] if len(continuation) > len(inp) else list(continuation)
            prepared.append((inp, cont))
        order = sorted(range(len(prepared)), key=lambda i: -len(prepared[i][0]))
        results: list[tuple[float, bool]] = [(0.0, False)] * len(prepared)
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                idx = order[start : start + self.batch_size]
                width = max(len(prepared[i][0]) for i in idx)
                batch = torch.zeros((len(idx), width), dtype=torch.long)
                for row, i in enumerate(idx):
                    inp = prepared[i][0]
                    batch[row, : len(inp)] = torch.tensor(inp, dtype=torch.long)
                rows = self._forward(batch.to(self.device))
                self.tokens_scored += sum(len(prepared[i][0]) for i in idx)
                for row, i in enumerate(idx):
                    inp, cont = prepared[i]
                    span = rows(row, len(inp) - len(cont), len(inp)).float().log_softmax(dim=-1)
                    target = torch.tensor(cont, dtype=torch.long, device=span.device)
                    ll = span.gather(-1, target[:, None]).sum().item()
                    greedy = bool((span.argmax(dim=-1) == target).all().item())
                    results[i] = (float(ll), greedy)
        return results

    def loglikelihood_rolling(self, documents: Sequence[list[int]], prefix_token: int) -> list[float]:
        """Full log-likelihood of each token list through disjoint rolling windows (harness semantics)."""
        requests: list[tuple[list[int], list[int]]] = []
        owner: list[int] = []
        for doc_index, tokens in enumerate(documents):
            for window in rolling_token_windows(tokens, prefix_token, self.max_length, context_len=1):
                requests.append(window)
                owner.append(doc_index)
        totals = [0.0] * len(documents)
        for doc_index, (ll, _) in zip(owner, self.loglikelihood_tokens(requests), strict=True):
            totals[doc_index] += ll
        return totals


# ---------------------------------------------------------------------------------------------------
# Task files


@dataclass
class Task:
    """One task: its documents (validated), kind and prompt delimiters."""

    name: str
    kind: str
    path: str
    docs: list[dict[str, Any]]
    target_delimiter: str = " "
    fewshot_delimiter: str = "\n\n"


@dataclass
class TaskResult:
    name: str
    kind: str
    num_docs: int
    num_fewshot: int
    metrics: dict[str, float] = field(default_factory=dict)

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
    if "page" in record:
        return "rolling"
    if "text" in record:
        return "last_word"
    return None


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
        if isinstance(gold, str) and gold.strip().lstrip("-").isdigit():
            gold = int(gold)  # HellaSwag ships its label as a string
        if not isinstance(gold, int) or isinstance(gold, bool) or not 0 <= gold < len(choices):
            raise DataError(f"{where}: 'gold' (or 'label') must be an index into the {len(choices)} choices")
        if any(len(c) == 0 for c in choices):
            raise DataError(f"{where}: a choice is empty (acc_norm divides by its length)")
        return {"query": query, "choices": choices, "gold": gold}
    key = "page" if kind == "rolling" and "page" in record else "text"
    text = record.get(key)
    if not isinstance(text, str) or not text.strip():
        raise DataError(f"{where}: {kind} needs a non-empty string '{key}'")
    if kind == "last_word" and len(text.split(" ")) < 2:
        raise DataError(f"{where}: last_word needs at least two space-separated words in 'text'")
    return {"text": text}


def load_task(name_or_path: str, tasks_dir: str | None = None) -> Task:
    """Read and validate a task jsonl file (format: docs/tasks.md).

    An optional first line `{"gptx_task": {"name", "kind", "target_delimiter", "fewshot_delimiter"}}`
    names the kind; without it the kind follows from the first record's keys (choices -> multiple
    choice, page -> rolling, text -> last word).
    """
    path = resolve_task_path(name_or_path, tasks_dir)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise UsageError(f"cannot read task file {path}: {err}") from err
    header: dict[str, Any] = {}
    docs: list[dict[str, Any]] = []
    kind: str | None = None
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
            if docs or header:
                raise DataError(f"{where}: the gptx_task header must be the first line")
            header = record["gptx_task"]
            if not isinstance(header, dict):
                raise DataError(f"{where}: gptx_task must be an object")
            unknown = set(header) - {"name", "kind", "target_delimiter", "fewshot_delimiter"}
            if unknown:
                raise DataError(f"{where}: unknown gptx_task key(s) {', '.join(sorted(unknown))}")
            kind = header.get("kind")
            if kind not in TASK_KINDS:
                raise DataError(
                    f"{where}: gptx_task.kind must be one of {', '.join(TASK_KINDS)}, got {kind!r}"
                )
            continue
        if kind is None:
            kind = _kind_of(record)
            if kind is None:
                raise DataError(
                    f"{where}: cannot tell the task kind: expected 'choices' (multiple_choice), "
                    "'page' (rolling) or 'text' (last_word)",
                    hint='or start the file with {"gptx_task": {"kind": ...}}',
                )
        docs.append(_check_doc(kind, record, where))
    if not docs:
        raise DataError(f"{path}: the task file has no documents")
    assert kind is not None
    return Task(
        name=str(header.get("name") or path.stem),
        kind=kind,
        path=str(path),
        docs=docs,
        target_delimiter=str(header.get("target_delimiter", " ")),
        fewshot_delimiter=str(header.get("fewshot_delimiter", "\n\n")),
    )


# ---------------------------------------------------------------------------------------------------
# Prompts and metrics


def _last_word_split(text: str) -> tuple[str, str]:
    words = text.split(" ")
    return " ".join(words[:-1]), " " + words[-1]


def _doc_text_and_target(task: Task, doc: dict[str, Any]) -> tuple[str, str]:
    """A solved example for few-shot prompts: (text, target), joined with the target delimiter."""
    if task.kind == "multiple_choice":
        return doc["query"], doc["choices"][doc["gold"]]
    context, target = _last_word_split(doc["text"])
    return context, target.lstrip(" ")


def _fewshot_prefix(task: Task, doc_index: int, num_fewshot: int, rng: random.Random) -> str:
    """Harness few-shot: examples drawn from the same set (never the document itself), seeded."""
    if num_fewshot == 0:
        return ""
    pool = rng.sample(range(len(task.docs)), min(num_fewshot + 1, len(task.docs)))
    shots = [i for i in pool if i != doc_index][:num_fewshot]
    examples = []
    for i in shots:
        text, target = _doc_text_and_target(task, task.docs[i])
        examples.append(text + task.target_delimiter + target)
    return task.fewshot_delimiter.join(examples) + task.fewshot_delimiter


def count_words(text: str) -> int:
    """The harness's word count for word_perplexity."""
    return len(re.split(r"\s+", text))


def evaluate_task(
    task: Task,
    scorer: LoglikelihoodScorer,
    tokenizer: TokenizerLike,
    *,
    limit: int | None = None,
    num_fewshot: int = 0,
    seed: int = DEFAULT_FEWSHOT_SEED,
) -> TaskResult:
    """Score one task; returns its metrics (harness names)."""
    if num_fewshot < 0:
        raise UsageError(f"--num-fewshot must be >= 0, got {num_fewshot}")
    if limit is not None and limit < 1:
        raise UsageError(f"--limit must be at least 1, got {limit}")
    docs = task.docs[:limit] if limit else task.docs
    prefix_token = tokenizer.eos_id
    if task.kind == "rolling":
        if num_fewshot:
            raise UsageError(f"task {task.name}: rolling (perplexity) tasks take no few-shot examples")
        if prefix_token is None:
            raise DataError(f"task {task.name}: rolling log-likelihood needs an end-of-text token")
        texts = [d["text"] for d in docs]
        lls = scorer.loglikelihood_rolling([tokenizer.encode(t) for t in texts], prefix_token)
        total_ll = sum(lls)
        words = sum(count_words(t) for t in texts)
        nbytes = sum(len(t.encode("utf-8")) for t in texts)
        metrics = {
            "word_perplexity": math.exp(-total_ll / words),
            "byte_perplexity": math.exp(-total_ll / nbytes),
            "bits_per_byte": -total_ll / nbytes / math.log(2),
        }
        return TaskResult(task.name, task.kind, len(docs), 0, metrics)

    rng = random.Random(seed)
    requests: list[tuple[list[int], list[int]]] = []
    if task.kind == "last_word":
        for i, doc in enumerate(docs):
            context, target = _last_word_split(doc["text"])
            prompt = _fewshot_prefix(task, i, num_fewshot, rng) + context
            requests.append(encode_pair(tokenizer, prompt, target, prefix_token))
        results = scorer.loglikelihood_tokens(requests)
        metrics = {
            "acc": sum(greedy for _, greedy in results) / len(results),
            "perplexity": math.exp(-sum(ll for ll, _ in results) / len(results)),
        }
        return TaskResult(task.name, task.kind, len(docs), num_fewshot, metrics)

    spans: list[tuple[int, int]] = []
    for i, doc in enumerate(docs):
        prompt = _fewshot_prefix(task, i, num_fewshot, rng) + doc["query"]
        start = len(requests)
        for choice in doc["choices"]:
            requests.append(encode_pair(tokenizer, prompt, task.target_delimiter + choice, prefix_token))
        spans.append((start, len(requests)))
    results = scorer.loglikelihood_tokens(requests)
    correct = correct_norm = 0
    for doc, (start, end) in zip(docs, spans, strict=True):
        lls = [ll for ll, _ in results[start:end]]
        normed = [ll / len(choice) for ll, choice in zip(lls, doc["choices"], strict=True)]
        # np.argmax semantics: the first maximum wins ties.
        correct += int(lls.index(max(lls)) == doc["gold"])
        correct_norm += int(normed.index(max(normed)) == doc["gold"])
    metrics = {"acc": correct / len(docs), "acc_norm": correct_norm / len(docs)}
    return TaskResult(task.name, task.kind, len(docs), num_fewshot, metrics)
