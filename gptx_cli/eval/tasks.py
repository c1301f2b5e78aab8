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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gptx_cli.errors import DataError, UsageError
from gptx_cli.eval.harness import (
    AGGREGATIONS,
    DEFAULT_BOOTSTRAP_ITERS,
    DETOKENIZERS,
    as_harness_tokenizer,
)
from gptx_cli.eval.harness import stderr as harness_stderr
from gptx_cli.eval.kinds import KINDS, GenerateFn, Scoring
from gptx_cli.eval.scorer import (
    LogitsFn,
    LoglikelihoodScorer,
    TokenizerLike,
    encode_pair,
    rolling_token_windows,
)

__all__ = [  # the scorer's names stay importable from here
    "GenerateFn",
    "LoglikelihoodScorer",
    "LogitsFn",
    "Task",
    "TaskResult",
    "TokenizerLike",
    "aggregate",
    "encode_pair",
    "evaluate_task",
    "fewshot_context",
    "limit_docs",
    "load_task",
    "rolling_token_windows",
]

TASK_KINDS = ("last_word", "multiple_choice", "rolling", "generate")
# The harness seeds its few-shot sampler with 1234 (lm_eval.api.samplers / evaluator defaults).
DEFAULT_FEWSHOT_SEED = 1234


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
        docs.append(KINDS[kind].check_doc(record, where))
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
            query, answer = KINDS[task.kind].query_and_answer(task, shot)
            if answer != "":
                parts.append(query + task.target_delimiter + answer + task.fewshot_delimiter)
            else:
                parts.append(query)
    parts.append(KINDS[task.kind].query_and_answer(task, doc)[0])
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
    """Score one task with its kind (`kinds.KINDS`); returns its metrics (harness names, with
    `<metric>_stderr`).

    `doc_range` (start, end) scores only those documents of the limited set (one shard of --nproc) and
    leaves the metrics to `aggregate` once the shards' per_doc lists are joined in order; prompts are
    still built for every document in order, so the few-shot draws do not depend on the sharding.
    """
    if num_fewshot < 0:
        raise UsageError(f"--num-fewshot must be >= 0, got {num_fewshot}")
    kind = KINDS[task.kind]
    if num_fewshot and not kind.takes_fewshot:
        raise UsageError(f"task {task.name}: rolling (perplexity) tasks take no few-shot examples")
    docs = task.docs[: limit_docs(len(task.docs), limit)]
    result = TaskResult(task.name, task.kind, len(docs), num_fewshot)
    lo, hi = doc_range if doc_range is not None else (0, len(docs))
    contexts: list[str] = []
    if kind.takes_fewshot:
        rnd = random.Random(seed)
        contexts = [fewshot_context(task, doc, num_fewshot, rnd) for doc in docs][lo:hi]
    env = Scoring(scorer, as_harness_tokenizer(tokenizer), generate_fn)
    scored = kind.score(task, docs[lo:hi], contexts, env)
    result.requests = sum(len(fields["arguments"]) for _, fields in scored)
    result.per_doc = {m: [values[m] for values, _ in scored] for m in task.metrics}
    if log_samples:
        result.samples = [
            {"doc_id": lo + i, "doc": doc, **fields}
            for i, (doc, (_, fields)) in enumerate(zip(docs[lo:hi], scored, strict=True))
        ]
    return aggregate(result, bootstrap_iters) if doc_range is None else result
