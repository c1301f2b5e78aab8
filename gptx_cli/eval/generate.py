"""Text generation: greedy or sampled decoding with the KV cache, stop sequences and streaming.

Logits processing follows Hugging Face `generate` so that the same settings give the same tokens:
repetition penalty first (on every token of prompt + output: negative logits multiplied, positive
divided), then, when sampling, temperature, top-k and top-p (nucleus; at least one token kept), then a
draw from the softmax with a seeded `torch.Generator` on the CPU, so a seed gives the same text on any
device.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from gptx_cli.checkpoint import resolve
from gptx_cli.errors import UsageError
from gptx_cli.eval.sampling import SamplingConfig
from gptx_cli.eval.source import resolve_device, resolve_dtype, resolve_tokenizer
from gptx_cli.model.doc_attention import causal_padding_mask
from gptx_cli.model.vocab import TOKENIZER_HINT, check_token_ids


@dataclass
class GenerationResult:
    prompt_tokens: list[int]
    tokens: list[int]  # generated ids (the end-of-text token included when it ended the text)
    text: str  # generated text, cut before a stop sequence
    stop_reason: str  # "eos", "stop", "length"
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "tokens": self.tokens,
            "text": self.text,
            "stop_reason": self.stop_reason,
            "notes": self.notes,
        }


class CachedDecoder:
    """Feeds new tokens through a gptx Transformer with its KV cache; returns the last position's logits."""

    def __init__(self, model: Any, max_len: int):
        import torch

        self.model = model
        self.device = next(model.parameters()).device
        self.cache = model.new_kv_cache(1, max_len)
        self.pos = 0
        self._torch = torch

    def __call__(self, new_tokens: Sequence[int]) -> Any:
        torch = self._torch
        ids = torch.tensor([list(new_tokens)], dtype=torch.long, device=self.device)
        with torch.inference_mode():
            logits = self.model(ids, kv_cache=self.cache, start_pos=self.pos)
        self.pos += len(new_tokens)
        return logits[0, -1].float()


class RecomputeDecoder:
    """The same interface over any `logits_fn(ids [1, T]) -> [1, T, V]`, recomputing the whole prefix
    each step (for models without a KV cache, and as the reference the cached path is tested against)."""

    def __init__(self, logits_fn: Callable[[Any], Any], device: Any = "cpu"):
        import torch

        self.logits_fn = logits_fn
        self.device = device
        self.ids: list[int] = []
        self._torch = torch

    def __call__(self, new_tokens: Sequence[int]) -> Any:
        torch = self._torch
        self.ids.extend(new_tokens)
        with torch.inference_mode():
            logits = self.logits_fn(torch.tensor([self.ids], dtype=torch.long, device=self.device))
        return logits[0, -1].float()


def process_logits(logits: Any, seen: Sequence[int], cfg: SamplingConfig) -> Any:
    """Hugging Face's processor order: repetition penalty, then temperature, top-k, top-p (sampling only)."""
    import torch

    scores = logits.float().clone()
    if cfg.repetition_penalty != 1.0 and seen:
        idx = torch.tensor(sorted(set(seen)), dtype=torch.long, device=scores.device)
        picked = scores[idx]
        scores[idx] = torch.where(
            picked < 0, picked * cfg.repetition_penalty, picked / cfg.repetition_penalty
        )
    if not cfg.do_sample:
        return scores
    if cfg.temperature != 1.0:
        scores = scores / cfg.temperature
    if cfg.top_k is not None:
        k = min(cfg.top_k, scores.shape[-1])
        threshold = torch.topk(scores, k).values[-1]
        scores = scores.masked_fill(scores < threshold, float("-inf"))
    if cfg.top_p is not None and cfg.top_p < 1.0:
        sorted_scores, order = torch.sort(scores, descending=False)
        cumulative = sorted_scores.softmax(dim=-1).cumsum(dim=-1)
        remove_sorted = cumulative <= (1 - cfg.top_p)
        remove_sorted[-1] = False  # always keep the most likely token
        remove = remove_sorted.scatter(0, order, remove_sorted)
        scores = scores.masked_fill(remove, float("-inf"))
    return scores


def choose_token(scores: Any, cfg: SamplingConfig, generator: Any) -> int:
    import torch

    if not cfg.do_sample:
        return int(scores.argmax().item())
    probs = scores.softmax(dim=-1).cpu()
    return int(torch.multinomial(probs, 1, generator=generator).item())


def _held_back(text: str, stops: Sequence[str]) -> int:
    """How many trailing characters could still grow into a stop sequence (so are not printed yet)."""
    hold = 0
    for s in stops:
        for n in range(min(len(s) - 1, len(text)), 0, -1):
            if text.endswith(s[:n]):
                hold = max(hold, n)
                break
    return hold


def generate(
    decoder: Callable[[Sequence[int]], Any],
    tokenizer: Any,
    prompt_tokens: Sequence[int],
    cfg: SamplingConfig,
    on_text: Callable[[str], None] | None = None,
) -> GenerationResult:
    """Decode up to cfg.max_new_tokens tokens after the prompt; `on_text` receives text as it becomes final.

    A batch of one through the one decode loop (`_decode`), with `decoder(new_tokens) -> logits [V]`
    (CachedDecoder, or RecomputeDecoder over any logits function). Text is released once it decodes to
    whole characters (a multi-byte character may span tokens) and cannot be the start of a stop
    sequence; a stop sequence ends generation and is not part of the text.
    """
    cfg.check()
    if not prompt_tokens:
        raise UsageError("the prompt is empty (it encodes to zero tokens)")
    first = decoder(list(prompt_tokens))[None]
    return _decode(
        first, lambda nxt, _i: decoder([nxt[0]])[None], [prompt_tokens], cfg, tokenizer, 0, on_text
    )[0]


class _Stream:
    """Releases one row's text to `emit` as it becomes final (whole characters, no stop-sequence prefix)."""

    def __init__(self, emit: Callable[[str], None], stops: Sequence[str]):
        self.emit, self.stops, self.emitted = emit, stops, 0

    def update(self, text: str) -> None:
        if not text.endswith("\ufffd"):  # an incomplete UTF-8 sequence waits for its next token
            safe = len(text) - _held_back(text, self.stops)
            if safe > self.emitted:
                self.emit(text[self.emitted : safe])
                self.emitted = safe

    def finish(self, text: str) -> None:
        if len(text) > self.emitted:
            self.emit(text[self.emitted :])


def _next_tokens(
    logits: Any, seen: list[list[int]], done: list[bool], cfg: SamplingConfig, generator: Any, pad_id: int
) -> list[int]:
    """One token per row: greedy argmax, or Hugging Face's processors and a draw in row order."""
    import torch

    if cfg.do_sample or cfg.repetition_penalty != 1.0:
        scores = torch.stack([process_logits(logits[r], seen[r], cfg) for r in range(len(seen))])
    else:
        scores = logits.float()
    if cfg.do_sample:
        return [
            choose_token(scores[r], cfg, generator) if not done[r] else int(pad_id) for r in range(len(seen))
        ]
    return [int(t) for t in scores.argmax(dim=-1).tolist()]


def _decode(
    logits: Any,
    step: Callable[[list[int], int], Any],
    prompts: Sequence[Sequence[int]],
    cfg: SamplingConfig,
    tokenizer: Any,
    pad_id: int,
    on_text: Callable[[str], None] | None = None,
) -> list[GenerationResult]:
    """The one decode loop: from the prompts' last logits [b, V], pick a token per row, stop a row at the
    end-of-text token or a stop sequence, and feed the new tokens (`step(tokens, i) -> logits [b, V]`)
    until every row is done or max_new_tokens is reached. `on_text` streams row 0 (a batch of one)."""
    b = len(prompts)
    generator = _generator(cfg.seed)
    stream = _Stream(on_text, cfg.stop) if on_text is not None else None
    outs: list[list[int]] = [[] for _ in range(b)]
    texts, reasons, done = [""] * b, ["length"] * b, [False] * b
    for i in range(cfg.max_new_tokens):
        nxt = _next_tokens(
            logits, [list(p) + o for p, o in zip(prompts, outs, strict=True)], done, cfg, generator, pad_id
        )
        for r in range(b):
            if done[r]:
                continue
            outs[r].append(nxt[r])
            if cfg.eos_id is not None and nxt[r] == cfg.eos_id:
                reasons[r], done[r] = "eos", True
                continue
            if cfg.stop or stream is not None:
                text = tokenizer.decode([t for t in outs[r] if t != cfg.eos_id])
                cut = min((j for j in (text.find(s) for s in cfg.stop) if j >= 0), default=-1)
                if cut >= 0:
                    texts[r], reasons[r], done[r] = text[:cut], "stop", True
                elif stream is not None:
                    stream.update(text)
        if all(done) or i + 1 == cfg.max_new_tokens:
            break
        logits = step(nxt, i)
    results = []
    for r in range(b):
        if reasons[r] != "stop" and tokenizer is not None:
            texts[r] = tokenizer.decode([t for t in outs[r] if t != cfg.eos_id])
        results.append(GenerationResult(list(prompts[r]), outs[r], texts[r], reasons[r]))
    if stream is not None:
        stream.finish(results[0].text)
    return results


def stream_to(stream: Any = None) -> Callable[[str], None]:
    """An `on_text` that writes to a text stream (stdout by default) and flushes, so tokens show as they come."""
    out = stream or sys.stdout

    def write(piece: str) -> None:
        out.write(piece)
        out.flush()

    return write


@dataclass
class GenerateOptions:
    checkpoint_path: str
    prompt: str
    tokenizer: str | None = None
    device: str = "auto"
    dtype: str = "float32"
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    ignore_eos: bool = False


def generate_from_checkpoint(
    opts: GenerateOptions,
    on_text: Callable[[str], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> GenerationResult:
    """Load the checkpoint and its tokenizer, then decode after the prompt with the KV cache."""
    model, tokenizer, (prompt_tokens,), cfg, notes = open_for_generation(opts, [opts.prompt], log)
    decoder = CachedDecoder(model, len(prompt_tokens) + cfg.max_new_tokens)
    result = generate(decoder, tokenizer, prompt_tokens, cfg, on_text)
    result.notes.extend(notes)
    return result


def open_for_generation(
    opts: GenerateOptions, prompts: Sequence[str], log: Callable[[str], None] | None = None
) -> tuple[Any, Any, list[list[int]], SamplingConfig, list[str]]:
    """The one front door of `gptx generate` (one prompt or many): the sampling rules, the checkpoint,
    its tokenizer, the prompts' token ids checked against the vocabulary, and one context rule: a prompt
    must leave room for one new token, and max_new_tokens is lowered (with a note) so that the longest
    prompt plus what is generated fits the model's positions. Returns (model, tokenizer, prompt ids,
    sampling config, notes)."""
    log = log or (lambda msg: print(msg, file=sys.stderr))
    cfg = opts.sampling
    cfg.check()
    source = resolve(opts.checkpoint_path)  # a clear error for a path that is not a checkpoint
    tokenizer = resolve_tokenizer(source, opts.tokenizer)
    if not opts.ignore_eos and cfg.eos_id is None:
        cfg.eos_id = tokenizer.eos_id
    encoded = [list(tokenizer.encode(p)) for p in prompts]
    for i, tokens in enumerate(encoded):
        if not tokens:
            which = "the prompt" if len(prompts) == 1 else f"prompt {i + 1}"
            raise UsageError(f"{which} is empty (it encodes to zero tokens)")
    model = source.load_model(resolve_device(opts.device), resolve_dtype(opts.dtype))
    _check_ids_fit(encoded, model, tokenizer)
    context = int(model.cfg.max_position_embeddings)
    longest = max(len(t) for t in encoded)
    notes = []
    if longest >= context:
        which = "the prompt" if len(prompts) == 1 else "the longest prompt"
        raise UsageError(f"{which} has {longest} tokens; the model's context is {context}")
    if longest + cfg.max_new_tokens > context:
        cfg = dataclasses.replace(cfg, max_new_tokens=context - longest)
        notes.append(f"max_new_tokens lowered to {cfg.max_new_tokens} to fit the context of {context}")
        log(f"note: {notes[-1]}")
    return model, tokenizer, encoded, cfg, notes


def _check_ids_fit(prompts: Sequence[Sequence[int]], model: Any, tokenizer: Any = None) -> None:
    """A tokenizer with a larger vocabulary than the model's (e.g. --tokenizer neox-20b on a small model)
    would index past the embedding: a named error instead."""
    vocab = getattr(getattr(model, "cfg", None), "vocab_size", None)
    ids = [t for p in prompts for t in p]
    if vocab is not None and ids:
        name = getattr(tokenizer, "name", "") or getattr(getattr(tokenizer, "tok", None), "name", "")
        check_token_ids(min(ids), max(ids), int(vocab), f"tokenizer {name}".strip(), TOKENIZER_HINT)


# ---------------------------------------------------------------------------------------------------
# Batched generation: left padding, per-row positions, a padding-aware causal mask, one KV cache


def _generator(seed: int | None) -> Any:
    """The CPU generator every draw comes from: seeded, so a seed gives the same text on any device."""
    import torch

    generator = torch.Generator(device="cpu")
    if seed is not None:
        generator.manual_seed(int(seed))
    else:
        generator.seed()
    return generator


def _left_padded(prompts: Sequence[Sequence[int]], total: int, pad_id: int, device: Any) -> tuple[Any, ...]:
    """(ids [b, width] left-padded, key_valid [b, total], lengths [b], positions [b, width]): real tokens
    sit at positions 0..len-1; padding positions are clamped to 0 (they are masked as keys)."""
    import torch

    b, width = len(prompts), max(len(p) for p in prompts)
    ids = torch.full((b, width), int(pad_id), dtype=torch.long)
    key_valid = torch.zeros((b, total), dtype=torch.bool)
    for row, p in enumerate(prompts):
        ids[row, width - len(p) :] = torch.tensor(list(p), dtype=torch.long)
        key_valid[row, width - len(p) : width] = True
    lengths = torch.tensor([len(p) for p in prompts], dtype=torch.long)
    ids, key_valid, lengths = ids.to(device), key_valid.to(device), lengths.to(device)
    positions = (key_valid[:, :width].long().cumsum(-1) - 1).clamp(min=0)
    return ids, key_valid, lengths, positions


def generate_batch(
    model: Any,
    prompts: Sequence[Sequence[int]],
    cfg: SamplingConfig,
    tokenizer: Any = None,
    pad_id: int = 0,
) -> list[GenerationResult]:
    """Decode after several prompts at once with the KV cache; each row as `generate` would decode it alone.

    Prompts are left-padded to one width. Each row's rotary positions count its own tokens from 0
    (`position_ids`, so a padded row is rotated as it would be unpadded: the GPT-NeoX trap of
    transformers #22161), and the attention mask hides padding keys (`causal_padding_mask`). A row stops
    at the end-of-text token or a stop sequence (then `tokenizer` is needed to see the text); the batch
    stops when every row has. Greedy rows equal one-at-a-time greedy decoding token for token (up to
    float rounding of the batched matmuls); sampled rows draw from one generator in row order.
    """
    import torch

    cfg.check()
    if not prompts or any(len(p) == 0 for p in prompts):
        raise UsageError("a prompt is empty (it encodes to zero tokens)")
    if cfg.stop and tokenizer is None:
        raise UsageError("stop sequences need the tokenizer")
    _check_ids_fit(prompts, model, tokenizer)
    device = next(model.parameters()).device
    b, width = len(prompts), max(len(p) for p in prompts)
    total = width + cfg.max_new_tokens
    ids, key_valid, lengths, positions = _left_padded(prompts, total, pad_id, device)
    cache = model.new_kv_cache(b, total)

    def step(nxt: list[int], i: int) -> Any:
        pos = width + i
        key_valid[:, pos] = True
        new = torch.tensor(nxt, dtype=torch.long, device=device)[:, None]
        step_mask = causal_padding_mask(key_valid[:, : pos + 1], 1, start_pos=pos)
        step_pos = (lengths + i)[:, None]
        return model(new, kv_cache=cache, start_pos=pos, position_ids=step_pos, attn_mask=step_mask)[:, -1]

    with torch.inference_mode():
        mask = causal_padding_mask(key_valid[:, :width], width)
        logits = model(ids, kv_cache=cache, start_pos=0, position_ids=positions, attn_mask=mask)[:, -1]
        return _decode(logits, step, prompts, cfg, tokenizer, pad_id)


class BatchGenerator:
    """lm-eval's HFLM.generate_until on a gptx model: requests sorted longest first, batches of
    `batch_size`, each context left-truncated to max_length - max_gen_toks tokens, greedy decoding of up
    to max_gen_toks tokens that stops at the end-of-text token or any `until` string (the end-of-text
    text is added to them), and the text cut before the first stop string (postprocess_generated_text)."""

    def __init__(self, model: Any, tokenizer: Any, max_length: int, batch_size: int = 8):
        self.model = model
        self.tok = tokenizer  # harness.HarnessTokenizer (its encode is HFLM.tok_encode)
        self.max_length = int(max_length)
        self.batch_size = max(1, int(batch_size))
        self.tokens_generated = 0

    def generate_until(self, contexts: Sequence[str], until: Sequence[str], max_gen_toks: int) -> list[str]:
        eos_id = self.tok.eos_id
        stops = list(until)
        eos_text = self.tok.decode([eos_id]) if eos_id is not None else None
        if eos_text and eos_text not in stops:
            stops.append(eos_text)
        max_ctx = self.max_length - max_gen_toks
        if max_ctx <= 0:
            raise UsageError(
                f"max_gen_toks {max_gen_toks} leaves no room for a prompt in the context of {self.max_length}"
            )
        encoded = [self.tok.encode(c) for c in contexts]
        order = sorted(range(len(contexts)), key=lambda i: (-len(encoded[i]), contexts[i]))
        out = [""] * len(contexts)
        cfg = SamplingConfig(max_new_tokens=max_gen_toks, stop=tuple(s for s in stops if s), eos_id=eos_id)
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            prompts = [encoded[i][-max_ctx:] for i in idx]
            for i, res in zip(
                idx, generate_batch(self.model, prompts, cfg, self.tok, pad_id=eos_id or 0), strict=True
            ):
                self.tokens_generated += len(res.tokens)
                text = res.text
                for term in stops:
                    if term:
                        text = text.split(term)[0]
                out[i] = text
        return out


def read_prompts_file(path: str) -> list[str]:
    """Prompts, one per line: a .jsonl file holds {"prompt": ...} objects, any other file plain text lines
    (blank lines skipped)."""
    import json

    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise UsageError(f"cannot read --prompts-file {path}: {err}") from err
    prompts = []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if path.endswith(".jsonl"):
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise UsageError(f"{path}:{lineno}: not valid JSON ({err.msg})") from err
            if not isinstance(record, dict) or not isinstance(record.get("prompt"), str):
                raise UsageError(f"{path}:{lineno}: expected an object with a string 'prompt'")
            prompts.append(record["prompt"])
        else:
            prompts.append(line)
    if not prompts:
        raise UsageError(f"--prompts-file {path} holds no prompts")
    return prompts


def generate_many_from_checkpoint(
    opts: GenerateOptions,
    prompts: Sequence[str],
    batch_size: int = 8,
    log: Callable[[str], None] | None = None,
) -> list[GenerationResult]:
    """`gptx generate --prompts-file`: every prompt, `batch_size` at a time, left-padded (generate_batch),
    through the same front door (and context rule) as one prompt."""
    if batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {batch_size}")
    model, tokenizer, encoded, cfg, notes = open_for_generation(opts, prompts, log)
    results: list[GenerationResult] = []
    for start in range(0, len(encoded), batch_size):
        results += generate_batch(
            model, encoded[start : start + batch_size], cfg, tokenizer, tokenizer.eos_id
        )
    for r in results:
        r.notes.extend(notes)
    return results
