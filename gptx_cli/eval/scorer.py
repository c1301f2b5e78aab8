"""The one loglikelihood scorer: (context, continuation) token requests -> log-likelihoods, as
lm-evaluation-harness's HFLM computes them (request construction, rolling windows, batched scoring).
`gptx eval --tasks` and `gptx lm-eval` both score through `LoglikelihoodScorer`."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

from gptx_cli.errors import DataError, UsageError
from gptx_cli.model.vocab import TOKENIZER_HINT, check_token_ids


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
