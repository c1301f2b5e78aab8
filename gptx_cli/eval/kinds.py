"""The four kinds of task, each one small object: it checks a document of a task file, renders the
text a solved example and a query show, and scores the documents (build the requests, run them,
compute each document's metric values and the sample `--log-samples` writes). Each follows the harness
task it stands for (docs/tasks.md names the source); `tasks.evaluate_task` is the one loop over them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from gptx_cli.errors import DataError, UsageError
from gptx_cli.eval.harness import DETOKENIZERS, count_bytes, count_words, exact_match
from gptx_cli.eval.scorer import LoglikelihoodScorer, encode_pair

GenerateFn = Callable[[list[str], list[str], int], list[str]]  # (contexts, until, max_gen_toks) -> texts
# Per document: its metric values (metric -> item) and the fields of its sample after doc_id and doc.
Scored = list[tuple[dict[str, Any], dict[str, Any]]]


@dataclass
class Scoring:
    """What a kind scores with: the loglikelihood scorer, the harness tokenizer, the generator."""

    scorer: LoglikelihoodScorer
    tok: Any  # harness.HarnessTokenizer
    generate_fn: GenerateFn | None = None


def _query(record: dict[str, Any], kind: str, where: str) -> str:
    query = record.get("query", record.get("context"))
    if not isinstance(query, str):
        raise DataError(f"{where}: {kind} needs a string 'query' (or 'context')")
    return query


def _text(record: dict[str, Any], kind: str, key: str, where: str) -> str:
    text = record.get(key)
    if not isinstance(text, str) or not text.strip():
        raise DataError(f"{where}: {kind} needs a non-empty string '{key}'")
    return text


def last_word_split(text: str) -> tuple[str, str]:
    """lambada_openai.yaml: doc_to_text = words[:-1] joined by ' ', doc_to_target = ' ' + words[-1]."""
    words = text.split(" ")
    return " ".join(words[:-1]), " " + words[-1]


class LastWord:
    """LAMBADA (output_type loglikelihood): `acc` (the target is the greedy decode) and `perplexity`."""

    name = "last_word"
    takes_fewshot = True

    def check_doc(self, record: dict[str, Any], where: str) -> dict[str, Any]:
        text = _text(record, self.name, "text", where)
        if len(text.split(" ")) < 2:
            raise DataError(f"{where}: last_word needs at least two space-separated words in 'text'")
        return {"text": text}

    def query_and_answer(self, task: Any, doc: dict[str, Any]) -> tuple[str, str]:
        return last_word_split(doc["text"])

    def score(self, task: Any, docs: Sequence[dict[str, Any]], contexts: list[str], env: Scoring) -> Scored:
        tok = env.tok
        targets = [last_word_split(doc["text"])[1] for doc in docs]
        requests = [encode_pair(tok, c, t, tok.prefix_token) for c, t in zip(contexts, targets, strict=True)]
        out: Scored = []
        for ctx, target, (ll, greedy) in zip(
            contexts, targets, env.scorer.loglikelihood_tokens(requests), strict=True
        ):
            values: dict[str, Any] = {"perplexity": ll, "acc": int(greedy)}
            out.append((values, {"arguments": [(ctx, target)], "resps": [[ll, greedy]], **values}))
        return out


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


class MultipleChoice:
    """HellaSwag, PIQA, ARC: `acc`, `acc_norm` (by the choice's length in characters) and, when asked
    for, `acc_mutual_info` (against the unconditional ("", delimiter + choice) requests)."""

    name = "multiple_choice"
    takes_fewshot = True

    def check_doc(self, record: dict[str, Any], where: str) -> dict[str, Any]:
        query = _query(record, self.name, where)
        choices = record.get("choices")
        gold = record.get("gold", record.get("label"))
        if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) for c in choices):
            raise DataError(f"{where}: 'choices' must be a list of at least two strings")
        if any(len(c) == 0 for c in choices):
            raise DataError(f"{where}: a choice is empty (acc_norm divides by its length)")
        if isinstance(gold, list):
            if not gold:
                raise DataError(f"{where}: 'gold' is an empty list")
            return {
                "query": query,
                "choices": choices,
                "gold": [_gold_index(g, choices, where) for g in gold],
            }
        return {"query": query, "choices": choices, "gold": _gold_index(gold, choices, where)}

    def query_and_answer(self, task: Any, doc: dict[str, Any]) -> tuple[str, str]:
        gold = doc["gold"]
        return doc["query"], doc["choices"][gold[0] if isinstance(gold, list) else gold]

    def score(self, task: Any, docs: Sequence[dict[str, Any]], contexts: list[str], env: Scoring) -> Scored:
        tok, mutual = env.tok, "acc_mutual_info" in task.metrics
        requests: list[tuple[list[int], list[int]]] = []
        arguments, spans = [], []
        for doc, ctx in zip(docs, contexts, strict=True):
            args = [(ctx, task.target_delimiter + choice) for choice in doc["choices"]]
            if mutual:  # ConfigurableTask.construct_requests: unconditional ("", delimiter + choice)
                args += [("", task.target_delimiter + choice) for choice in doc["choices"]]
            spans.append((len(requests), len(requests) + len(args)))
            requests += [encode_pair(tok, c, t, tok.prefix_token) for c, t in args]
            arguments.append(args)
        results = env.scorer.loglikelihood_tokens(requests)
        out: Scored = []
        for doc, args, (start, end) in zip(docs, arguments, spans, strict=True):
            values = self._values(doc, [ll for ll, _ in results[start:end]], mutual)
            resps = [[ll, g] for ll, g in results[start:end]]
            out.append((values, {"target": doc["gold"], "arguments": args, "resps": resps, **values}))
        return out

    @staticmethod
    def _values(doc: dict[str, Any], lls_all: list[float], mutual: bool) -> dict[str, Any]:
        n = len(doc["choices"])
        lls = lls_all[:n]
        golds = doc["gold"] if isinstance(doc["gold"], list) else [doc["gold"]]
        pred = lls.index(max(lls))  # np.argmax semantics: the first maximum wins ties
        normed = [ll / float(len(c)) for ll, c in zip(lls, doc["choices"], strict=True)]
        values: dict[str, Any] = {
            "acc": float(pred in golds),
            "acc_norm": float(normed.index(max(normed)) in golds),
        }
        if mutual:
            mi = [c - u for c, u in zip(lls, lls_all[n:], strict=True)]
            values["acc_mutual_info"] = float(mi.index(max(mi)) in golds)
        return values


class Rolling:
    """WikiText (loglikelihood_rolling): `word_perplexity`, `byte_perplexity`, `bits_per_byte` over
    disjoint rolling windows of the detokenized text, counted on the raw (or `count_from`) text."""

    name = "rolling"
    takes_fewshot = False

    def check_doc(self, record: dict[str, Any], where: str) -> dict[str, Any]:
        key = "page" if "page" in record and "text" not in record else "text"
        text = _text(record, self.name, key, where)
        out = {"text": text}
        out.update({k: v for k, v in record.items() if k != key and isinstance(v, str)})
        out["raw"] = text
        return out

    def query_and_answer(self, task: Any, doc: dict[str, Any]) -> tuple[str, str]:
        return last_word_split(doc["text"])  # never a shot: rolling tasks take no few-shot examples

    def score(self, task: Any, docs: Sequence[dict[str, Any]], contexts: list[str], env: Scoring) -> Scored:
        detok = DETOKENIZERS[task.detokenizer]
        texts = [detok(d["text"]) for d in docs]
        lls = env.scorer.loglikelihood_rolling([env.tok.encode(t) for t in texts], env.tok.prefix_token)
        out: Scored = []
        for doc, text, ll in zip(docs, texts, lls, strict=True):
            counted = doc[task.count_from] if task.count_from else doc.get("raw", doc["text"])
            words, nbytes = count_words(counted), count_bytes(counted)
            values = {
                "word_perplexity": (ll, words),
                "byte_perplexity": (ll, nbytes),
                "bits_per_byte": (ll, nbytes),
            }
            out.append((values, {"arguments": [[text]], "resps": [[ll]], **values}))
        return out


class Generate:
    """generate_until: `exact_match` of the greedy text, cut at the stop sequences, against any answer."""

    name = "generate"
    takes_fewshot = True

    def check_doc(self, record: dict[str, Any], where: str) -> dict[str, Any]:
        query = _query(record, self.name, where)
        answer = record.get("answer")
        if isinstance(answer, list):
            if not answer or not all(isinstance(a, str) for a in answer):
                raise DataError(f"{where}: 'answer' must be a string or a non-empty list of strings")
        elif not isinstance(answer, str):
            raise DataError(f"{where}: generate needs a string 'answer' (or a list of them)")
        return {"query": query, "answer": answer}

    def query_and_answer(self, task: Any, doc: dict[str, Any]) -> tuple[str, str]:
        answer = doc["answer"]
        return doc["query"], answer[0] if isinstance(answer, list) else answer

    def score(self, task: Any, docs: Sequence[dict[str, Any]], contexts: list[str], env: Scoring) -> Scored:
        if env.generate_fn is None:
            raise UsageError(f"task {task.name}: generation needs a model that can generate")
        until = list(task.until) if task.until is not None else [task.fewshot_delimiter]
        outputs = env.generate_fn(contexts, until, task.max_gen_toks)
        out: Scored = []
        for doc, ctx, text in zip(docs, contexts, outputs, strict=True):
            golds = doc["answer"] if isinstance(doc["answer"], list) else [doc["answer"]]
            values = {"exact_match": float(any(exact_match(text, g) for g in golds))}
            arguments = [[ctx, {"until": until, "max_gen_toks": task.max_gen_toks}]]
            out.append(
                (values, {"arguments": arguments, "resps": [[text]], "target": doc["answer"], **values})
            )
        return out


KINDS: dict[str, Any] = {k.name: k for k in (LastWord(), MultipleChoice(), Rolling(), Generate())}
