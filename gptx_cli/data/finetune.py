"""ModelZoo's `finetuning` preprocessing mode: prompt/completion and chat records -> [n, 3, msl] samples.

Ported from ModelZoo's `finetuning_token_generator.py`, `hooks.py` and `utils.py` (Release 2.10):

- **Read hooks.** `prompt_completion_text_read_hook` (kwargs `prompt_key`, `completion_key`) makes a
  prompt region (loss weight 0) and a completion region (loss weight 1). `chat_read_hook` (kwargs
  `multi_turn_key`, `multi_turn_role_key`, `multi_turn_content_key`) makes one region per turn: an
  optional leading system turn, then user/assistant pairs; only `assistant` turns have loss weight 1.
- **Text.** Every region is cleaned with ftfy (`use_ftfy: true`, `ftfy_normalizer: NFC`, as ModelZoo).
  Prompt/completion: `prompt + sep_token + completion + eos_text` (sep_token: the tokenizer's, else the
  literal `<|sep|>`, as ModelZoo; `sep_token: null` drops it), tokenised in one call, so the ids are the
  tokenizer's own encoding of that string. Chat: the ChatML template ModelZoo uses for tokenizers
  without a chat template (`<|im_start|>role\\ncontent<|im_end|>\\n` per turn), tokenised without
  special tokens.
- **Loss mask.** Character regions map to token ranges through the offsets (`find_token_range`); a
  region is extended over the EOS text (or `end_of_turn_token`) that follows it
  (`append_eos_to_multiple_semantic_regions`, including ModelZoo's one-token "turn token" rule for
  chat); mask = the region's loss weight per token. Then `input_ids = ids[:-1]`, `labels = ids[1:]`,
  `attention_mask = mask[1:]` (the loss mask, aligned with labels), padded to msl with pad_id / 0.
- **Length.** An example of more than `max_seq_length` tokens is dropped, unless `dataset.truncate_to_msl`
  cuts it to `max_seq_length` tokens (ModelZoo's `utils.py: truncate_sequence`: prompt / user turns
  first, each kept to at least `max_turn_length` tokens, by `prompt_truncation_mode`, then completion /
  assistant turns from their end; an example it cannot cut enough is dropped); one of fewer than
  `min_sequence_len` (10) is dropped; both are counted in data_params.json (`examples_too_long`,
  `examples_too_short`, ModelZoo's `discarded_files`).
- **A region's last character.** ModelZoo's `find_token_range` ends a region at the first token that
  reaches its end, so when the last character is several byte-level tokens (CJK, many emoji) the others
  are left out of the region (their loss weight is 0); gptx does the same and counts such examples, and
  `keep_whole_last_character` (`processing.gptx_keep_whole_last_character`) keeps them in.
- **Packing.** With `use_vsl` (`--use-vsl`, ModelZoo's `VSLFinetuningTokenGenerator`) several examples
  share a [5, msl] sample, each with its own attention span and positions (gptx_cli/data/vsl.py:
  `pack_bins`, ModelZoo's `append_within_max_length` per read chunk: from the last example backwards,
  each joins the nearest earlier bin it fits in, `<= max_seq_length` tokens); without it (ModelZoo's `finetuning` generator)
  each example is padded on its own. ModelZoo's finetuning generators never read `pack_sequences`:
  `--pack-sequences` is refused here, `dataset.pack_sequences` warned as having no effect.

A record that cannot be read (a missing key, an empty completion, a turn that is not a string) is a
`DataError` naming file:line.
"""

from __future__ import annotations

import json
import numbers
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from gptx_cli.data.textclean import TextCleaning, TextCounts
from gptx_cli.data.vsl import record_size
from gptx_cli.errors import ConfigError, DataError

PROMPT_COMPLETION_HOOK = "prompt_completion_text_read_hook"
CHAT_HOOK = "chat_read_hook"
HOOKS = (PROMPT_COMPLETION_HOOK, CHAT_HOOK)
DEFAULT_SEP = "<|sep|>"  # ModelZoo's when the tokenizer has no sep_token
_UNSET = object()


@dataclass
class FinetuneSpec:
    """What the finetuning token generator needs besides PreprocessOptions' msl / min_sequence_len."""

    hook: str = PROMPT_COMPLETION_HOOK
    prompt_key: str | None = None
    completion_key: str | None = None
    multi_turn_key: str | None = None
    multi_turn_role_key: str | None = None
    multi_turn_content_key: str | None = None
    sep_token: str | None = DEFAULT_SEP  # None: no separator
    end_of_turn_token: str | None = None
    use_ftfy: bool = True
    ftfy_normalizer: str | None = "NFC"
    wikitext_detokenize: bool = False
    # dataset.truncate_to_msl: {"max_turn_length": int | None (None: msl), "prompt_truncation_mode": ...}
    truncate_to_msl: dict[str, Any] | None = None

    def columns(self) -> list[str]:
        if self.hook == CHAT_HOOK:
            return [str(self.multi_turn_key)]
        return [str(self.prompt_key), str(self.completion_key)]

    def data_keys(self) -> list[str]:
        """The record keys ModelZoo's reader keeps (read_hook_kwargs ending in `_key`): what a record
        counts towards a read chunk (data/vsl.py)."""
        if self.hook == CHAT_HOOK:
            keys = [self.multi_turn_key, self.multi_turn_role_key, self.multi_turn_content_key]
        else:
            keys = [self.prompt_key, self.completion_key]
        return list(dict.fromkeys(str(k) for k in keys if k))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if d["truncate_to_msl"] is None:  # recorded only when set (earlier runs' records stay the same)
            del d["truncate_to_msl"]
        return d


def hook_name(read_hook: str) -> str:
    """`module.path:name` or `name` -> name (only ModelZoo's two finetuning text hooks are known)."""
    name = read_hook.rsplit(":", 1)[-1].rsplit(".", 1)[-1]
    if name not in HOOKS:
        raise ConfigError(
            f"read_hook '{read_hook}' is not supported in finetuning mode (gptx knows {', '.join(HOOKS)})"
        )
    return name


def make_spec(
    read_hook: str | None,
    kwargs: dict[str, Any] | None,
    *,
    where: str = "read_hook_kwargs",
    sep_token: Any = _UNSET,
    end_of_turn_token: str | None = None,
    use_ftfy: bool = True,
    ftfy_normalizer: str = "NFC",
) -> FinetuneSpec:
    """A FinetuneSpec from a hook name and its kwargs; a missing or unknown kwarg is a ConfigError."""
    kwargs = dict(kwargs or {})
    hook = hook_name(read_hook or PROMPT_COMPLETION_HOOK)
    need = (
        ("multi_turn_key", "multi_turn_role_key", "multi_turn_content_key")
        if hook == CHAT_HOOK
        else ("prompt_key", "completion_key")
    )
    unknown = sorted(set(kwargs) - set(need))
    if unknown:
        raise ConfigError(
            f"{where}: '{unknown[0]}' is not an argument of {hook} (it takes {', '.join(need)})"
        )
    missing = [k for k in need if not kwargs.get(k)]
    if missing:
        raise ConfigError(f"{where}: {hook} needs '{missing[0]}'", hint=f"it takes {', '.join(need)}")
    spec = FinetuneSpec(hook=hook)
    for k, v in kwargs.items():
        setattr(spec, k, str(v))
    if sep_token is not _UNSET:
        spec.sep_token = None if sep_token in (None, "") else str(sep_token)
    spec.end_of_turn_token = end_of_turn_token or None
    spec.use_ftfy, spec.ftfy_normalizer = bool(use_ftfy), str(ftfy_normalizer)
    return spec


# ------------------------------------------------------------------------------------ records -> regions


@dataclass
class _Region:
    role: str
    start: int  # character offsets in the formatted text
    end: int
    loss_weight: int
    handle_turn_token: bool = False


@dataclass
class Example:
    """One tokenised example: all its ids and the per-token loss weight (before the label shift)."""

    ids: list[int]
    mask: list[int]
    # ModelZoo's find_token_range left a region's last character's trailing tokens out of the region,
    # and that changed the example (its mask, or its truncation)
    ending_cut: bool = False


# The region sizes of the batch `encode_batch` encodes (ModelZoo's raw_* / normalized_* counts).
_COUNTS: list[TextCounts] = []


def _clean(text: str, spec: FinetuneSpec) -> str:
    """ModelZoo's clean_text on every region (ftfy, wikitext detokenizer), as TextCleaning does it;
    counted as ModelZoo's _encode counts each region (before and after cleaning)."""
    cleaned = TextCleaning(
        use_ftfy=spec.use_ftfy,
        ftfy_normalizer=spec.ftfy_normalizer,
        wikitext_detokenize=spec.wikitext_detokenize,
    ).clean(text)
    if _COUNTS:
        _COUNTS[-1].add(text, cleaned)
    return cleaned


def _field(rec: dict[str, Any], key: str, where: str, what: str) -> str:
    if key not in rec:
        raise DataError(f"{where}: no key '{key}' in the record (has: {', '.join(map(str, rec))})")
    value = rec[key]
    if not isinstance(value, str):
        raise DataError(f"{where}: {what} '{key}' is {type(value).__name__}, not a string")
    if not value:
        raise DataError(f"{where}: {what} '{key}' is empty")
    return value


def _prompt_completion(
    rec: dict[str, Any], spec: FinetuneSpec, eos_text: str, where: str
) -> tuple[str, list[_Region]]:
    prompt = _clean(_field(rec, str(spec.prompt_key), where, "prompt"), spec)
    completion = _clean(_field(rec, str(spec.completion_key), where, "completion"), spec)
    sep = spec.sep_token or ""
    regions = [_Region("prompt", 0, len(prompt), 0)]
    start = len(prompt) + len(sep)
    regions.append(_Region("completion", start, start + len(completion), 1))
    return prompt + sep + completion + eos_text, regions


def _check_turns(rec: dict[str, Any], key: str, role_key: str, content_key: str, where: str) -> None:
    """A chat record's shape: a list of mappings with string role and content (else a DataError)."""
    if key not in rec:
        raise DataError(f"{where}: no key '{key}' in the record (has: {', '.join(map(str, rec))})")
    turns = rec[key]
    if not isinstance(turns, list):
        raise DataError(f"{where}: '{key}' is {type(turns).__name__}, not a list of turns")
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict):
            raise DataError(f"{where}: turn {i} of '{key}' is {type(turn).__name__}, not a mapping")
        for k, what in ((role_key, "role"), (content_key, "content")):
            if k not in turn:
                raise DataError(f"{where}: turn {i} of '{key}' has no {what} key '{k}'")
            if not isinstance(turn[k], str):
                raise DataError(
                    f"{where}: turn {i} of '{key}': {what} '{k}' is {type(turn[k]).__name__}, not a string"
                )


def check_record(rec: Any, spec: FinetuneSpec, where: str) -> None:
    """The checks encode_record makes before tokenising, for a record read elsewhere (data.splits reads
    the user's files and writes the split files that are preprocessed: errors name the user's line)."""
    if not isinstance(rec, dict):
        raise DataError(f"{where}: the record is {type(rec).__name__}, not a JSON object")
    if spec.hook == CHAT_HOOK:
        keys = (str(spec.multi_turn_key), str(spec.multi_turn_role_key), str(spec.multi_turn_content_key))
        _check_turns(rec, *keys, where)
        return
    _field(rec, str(spec.prompt_key), where, "prompt")
    _field(rec, str(spec.completion_key), where, "completion")


def _chat(rec: dict[str, Any], spec: FinetuneSpec, where: str) -> tuple[str, list[_Region]] | str:
    """ChatML text and regions, or why ModelZoo's chat_read_hook skips the conversation (its warning)."""
    key, role_key, content_key = (
        str(spec.multi_turn_key),
        str(spec.multi_turn_role_key),
        str(spec.multi_turn_content_key),
    )
    _check_turns(rec, key, role_key, content_key, where)
    turns = rec[key]
    if not turns:
        return f"'{key}' has no turns (ModelZoo's chat_read_hook returns nothing for it)"
    pairs: list[tuple[str, str]] = []
    system = turns[0][role_key] == "system"
    if system:
        if turns[0][content_key]:
            pairs.append(("system", turns[0][content_key]))
        turns = turns[1:]
    if len(turns) % 2:
        return (
            f"'{key}' has {len(turns)} turn{'s' if len(turns) != 1 else ''}"
            f"{' after the system turn' if system else ''}, not user/assistant pairs (ModelZoo's "
            "chat_read_hook: 'Every user should have a corresponding assistant, skipping...')"
        )
    for i in range(0, len(turns), 2):
        user, assistant = turns[i], turns[i + 1]
        if user[role_key] == assistant[role_key]:
            n = i + (1 if system else 0)
            return (
                f"turns {n} and {n + 1} of '{key}' are both '{user[role_key]}' (ModelZoo's chat_read_hook: "
                "'Two consecutive messages by the same participant is not allowed, skipping...')"
            )
        pairs.append((user[role_key], user[content_key].strip()))
        pairs.append((assistant[role_key], assistant[content_key].strip()))
    text, regions = "", []
    for n, (role, content) in enumerate(pairs):
        if not content:
            raise DataError(f"{where}: turn {n} ({role}) of '{key}' is empty")
        content = _clean(content, spec)
        head = f"<|im_start|>{role}\n"
        start = len(text) + len(head)
        regions.append(_Region(role, start, start + len(content), 1 if role == "assistant" else 0))
        text += head + content + "<|im_end|>\n"
    return text, regions


def _append_eos(text: str, regions: list[_Region], eos: str, chat: bool) -> None:
    """ModelZoo's append_eos_to_multiple_semantic_regions: extend each region over the EOS text that
    follows it; for chat without (enough) EOS texts, mark regions followed by a gap."""
    if not regions or not eos:
        return
    found: list[tuple[int, int]] = []
    pos = regions[0].start
    while pos < len(text):
        at = text.find(eos, pos)
        if at == -1:
            break
        pos = at + len(eos)
        found.append((at, pos))
    e = r = 0
    while e < len(found) and r < len(regions):
        eos_start, eos_end = found[e]
        reg = regions[r]
        if reg.start <= eos_start < reg.end:
            e += 1
            continue
        if r + 1 < len(regions):
            if reg.end <= eos_start < regions[r + 1].start:
                reg.end = eos_end
                e += 1
        else:
            reg.end = eos_end
            e += 1
        r += 1
    if not chat or len(found) > 1:
        return
    for i in range(1, len(regions)):
        if regions[i - 1].end != regions[i].start:
            regions[i - 1].handle_turn_token = True
        if i == len(regions) - 1 and regions[i].end < len(text):
            regions[i].handle_turn_token = True


def find_token_range(
    start: int, end: int, offsets: list[tuple[int, int]], first: int, keep_whole_last_character: bool = False
) -> tuple[int, int]:
    """ModelZoo's find_token_range (data_preprocessing/utils.py): the tokens covering characters
    [start, end) -> [token_start, token_end).

    Its end is the first token that reaches `end`, so when the region's last character is several
    tokens (a byte-level BPE splits a CJK character or an emoji into bytes) the others are outside the
    range. `keep_whole_last_character` extends the range over every token that starts before `end`."""
    n = len(offsets)
    t0 = next(
        (i for i in range(first, n) if (offsets[i][0] <= start < offsets[i][1]) or offsets[i][0] > start),
        None,
    )
    if t0 is None:
        raise DataError("the tokenizer's offsets do not cover a region of the example")
    t1 = next(
        (
            i
            for i in range(t0, n)
            if (offsets[i][1] >= end and offsets[i][0] < end)
            or (offsets[i][1] < end and (i + 1 >= n or offsets[i + 1][0] >= end))
        ),
        None,
    )
    if t1 is None:
        raise DataError("the tokenizer's offsets do not cover a region of the example")
    if keep_whole_last_character:
        while t1 + 1 < n and offsets[t1 + 1][0] < end:
            t1 += 1
    return t0, t1 + 1


def trailing_tokens_cut(text: str, hf: Any) -> int:
    """How many tokens ModelZoo's pretraining generator drops at the end of a document: its one region
    (the whole text) ends where find_token_range ends it (pretraining_token_generator.py:
    get_segment_indices, chop_doc_into_msl). An ASCII last character is one byte of one token, so only
    a non-ASCII one can be cut."""
    if not text or text[-1] < "\x80":
        return 0
    offsets = [tuple(o) for o in hf.encode(text, add_special_tokens=False).offsets]
    if not offsets:
        return 0
    return len(offsets) - find_token_range(0, len(text), offsets, 0)[1]


def _mask(n: int, ranges: list[list[int]], regions: list[_Region]) -> list[int]:
    """ModelZoo's loss_mask_region: each region's loss weight over its token range."""
    mask = [0] * n
    for (t0, t1), reg in zip(ranges, regions, strict=True):
        for i in range(t0, min(t1, n)):
            mask[i] = reg.loss_weight
    return mask


def tokenize_example(
    hf: Any,
    text: str,
    regions: list[_Region],
    eos: str,
    chat: bool,
    *,
    msl: int | None = None,
    truncation: dict[str, Any] | None = None,
    keep_whole_last_character: bool = False,
    where: str = "",
) -> Example:
    """Token ids of `text` (the tokenizer's own encoding) and the loss weight of each token; an example
    over `msl` tokens is cut by `truncation` (ModelZoo's truncate_to_msl) when given."""
    _append_eos(text, regions, eos, chat)
    enc = hf.encode(text, add_special_tokens=not chat)
    ids, offsets = list(enc.ids), [tuple(o) for o in enc.offsets]

    def token_ranges(keep: bool) -> list[list[int]]:
        ranges, first = [], 0
        for reg in regions:
            t0, t1 = find_token_range(reg.start, reg.end, offsets, first, keep)
            if reg.handle_turn_token:
                t1 += 1
            first = t1
            ranges.append([t0, t1])
        return ranges

    def build(ranges: list[list[int]]) -> tuple[list[int], list[int]]:
        if truncation is not None and msl is not None and len(ids) > msl:
            cut = truncate_sequence(list(ids), regions, ranges, msl, truncation, where)
            if cut is not None:  # else it stays over msl and is dropped as too long
                return cut[0], _mask(len(cut[0]), cut[1], regions)
        return ids, _mask(len(ids), ranges, regions)

    ranges = token_ranges(keep_whole_last_character)
    got = build(ranges)
    if not keep_whole_last_character:
        whole = token_ranges(True)
        if whole != ranges:
            return Example(*got, ending_cut=build(whole) != got)
    return Example(*got)


def truncate_sequence(
    ids: list[int],
    regions: list[_Region],
    ranges: list[list[int]],
    msl: int,
    truncation: dict[str, Any],
    where: str,
) -> tuple[list[int], list[list[int]]] | None:
    """ModelZoo's truncate_sequence (data_preprocessing/utils.py), rule for rule: cut `ids` to `msl` tokens
    -> (ids, the regions' new token ranges), or None when it cannot cut enough (ModelZoo skips the example).

    Part one (prompt, or user turns) is cut first, longest region first, each kept to at least
    `max_turn_length` tokens, from its end (keep_start) or its start (keep_end); then part two
    (completion, or assistant turns), longest first, from its end. Part two is tried only when the sum of
    (length - max_turn_length) over its regions, short ones counted negative as in ModelZoo, covers what
    is left to cut. Where ModelZoo's own code stops with an exception, this is a DataError naming it."""
    max_turn = msl if truncation.get("max_turn_length") is None else int(truncation["max_turn_length"])
    mode = truncation.get("prompt_truncation_mode", "keep_end")
    by_role: dict[str, list[tuple[int, int]]] = {}
    for reg, r in zip(regions, ranges, strict=True):
        by_role.setdefault(reg.role, []).append((r[0], r[1]))
    failed = (
        f"{where}: dataset.truncate_to_msl cannot cut this example: ModelZoo's utils.py: truncate_sequence "
    )
    if "prompt" in by_role and "completion" in by_role:
        if by_role["prompt"][0][0] != 0:
            raise DataError(
                failed + "fails when the prompt does not start at token 0 (it assigns to a tuple)"
            )
        one, two = by_role["prompt"], by_role["completion"]
    elif "user" in by_role and "assistant" in by_role:
        one, two = by_role["user"], by_role["assistant"]
    else:
        raise DataError(failed + "supports only 'prompt'/'completion' or 'user'/'assistant' regions")
    left = len(ids) - msl
    p1 = [(i, "one", r) for i, r in enumerate(one)]
    p2 = [(i, "two", r) for i, r in enumerate(two)]
    rem1: list[tuple[int, str, str, tuple[int, int]]] = []
    rem2: list[tuple[int, str, str, tuple[int, int]]] = []
    done = False
    for i, part, (s, e) in sorted(p1, key=lambda x: x[2][1] - x[2][0], reverse=True):
        if max_turn >= e - s:
            continue
        avail = e - s - max_turn
        take = avail if avail < left else left
        rem1.append((i, part, mode, (e - take, e) if mode == "keep_start" else (s, s + take)))
        if avail < left:
            left -= avail
        else:
            done = True
            break
    if not done:
        if sum((e - s) - max_turn for _, _, (s, e) in p2) < left:
            return None
        for i, part, (s, e) in sorted(p2, key=lambda x: x[2][1] - x[2][0], reverse=True):
            if max_turn >= e - s:
                continue
            avail = e - s - max_turn
            if avail < left:
                left -= avail
                rem2.append((i, part, "keep_start", (e - avail, e)))
            else:
                rem2.append((i, part, "keep_start", (e - left, e)))
                break
    for _, _, _, (s, e) in sorted(rem1 + rem2, key=lambda x: x[3][0], reverse=True):
        del ids[s:e]
    if len(ids) != msl:
        raise DataError(
            failed + "asserts 'After truncation, the length of token IDs should be equal to MSL.'"
        )
    removed = {(i, part): (m, r) for i, part, m, r in rem1 + rem2}
    shift, updated = 0, []
    for i, part, (s, e) in sorted(p1 + p2, key=lambda x: x[2][0]):
        got = removed.get((i, part))
        if got is None:
            updated.append([s - shift, e - shift])
            continue
        m, (rs, re) = got
        cut = re - rs
        updated.append([s - shift, rs - shift] if m == "keep_start" else [re - shift - cut, e - shift - cut])
        shift += cut
    if len(updated) != len(regions):
        raise DataError(
            failed + "asserts 'Mismatch in number of regions' when an example has regions besides "
            f"{'prompt/completion' if 'prompt' in by_role else 'user/assistant'} (here: "
            f"{', '.join(sorted(set(by_role) - {'prompt', 'completion', 'user', 'assistant'}))})"
        )
    return ids, updated


def encode_record(
    rec: Any,
    spec: FinetuneSpec,
    hf: Any,
    eos_text: str,
    where: str,
    msl: int | None = None,
    keep_whole_last_character: bool = False,
) -> Example | str:
    """One record -> Example, or why ModelZoo's chat hook skips the conversation."""
    if not isinstance(rec, dict):
        raise DataError(f"{where}: the record is {type(rec).__name__}, not a JSON object")
    how: dict[str, Any] = {
        "msl": msl,
        "truncation": spec.truncate_to_msl,
        "keep_whole_last_character": keep_whole_last_character,
        "where": where,
    }
    if spec.hook == CHAT_HOOK:
        got = _chat(rec, spec, where)
        if isinstance(got, str):
            return got
        text, regions = got
        return tokenize_example(hf, text, regions, spec.end_of_turn_token or eos_text, chat=True, **how)
    text, regions = _prompt_completion(rec, spec, eos_text, where)
    return tokenize_example(hf, text, regions, eos_text, chat=False, **how)


# -------------------------------------------------------------------------------------- samples


@dataclass
class FinetuneStats:
    """Counts for data_params.json (ModelZoo's names where it has them)."""

    examples: int = 0
    examples_too_long: int = 0  # > max_seq_length tokens: dropped (ModelZoo, without truncate_to_msl)
    examples_too_short: int = 0  # < min_sequence_len tokens: dropped
    examples_skipped_chat: int = 0  # odd turn count / repeated role: ModelZoo's chat hook skips them
    n_examples: int = 0  # samples written
    num_tokens: int = 0
    non_pad_tokens: int = 0  # neither pad nor EOS (ModelZoo's get_data_stats)
    num_pad_tokens: int = 0
    loss_valid_tokens: int = 0
    num_masked_tokens: int = 0
    example_tokens: int = 0  # tokens of the kept examples
    num_sequences_before_packing: int = 0
    endings_cut: int = 0  # kept examples that ModelZoo's find_token_range changed (Example.ending_cut)

    def add(self, other: FinetuneStats) -> None:
        for k in self.__dataclass_fields__:
            setattr(self, k, getattr(self, k) + getattr(other, k))


def sample_from_example(ex: Example, msl: int, pad_id: int) -> np.ndarray:
    """[3, msl]: the example's ids shifted and padded (ModelZoo's pad_to_msl)."""
    ids, mask = ex.ids, ex.mask
    out = np.full((3, msl), pad_id, dtype=np.int32)
    out[1] = 0
    n = len(ids) - 1
    out[0, :n] = ids[:-1]
    out[1, :n] = mask[1:]
    out[2, :n] = ids[1:]
    return out


def keep_example(ex: Example, msl: int, min_len: int, st: FinetuneStats) -> bool:
    """Whether an example is kept (at most msl, at least min_len tokens), counted in `st`."""
    st.examples += 1
    if len(ex.ids) > msl:
        st.examples_too_long += 1
        return False
    if len(ex.ids) < min_len or len(ex.ids) < 2:
        st.examples_too_short += 1
        return False
    st.example_tokens += len(ex.ids)
    st.endings_cut += ex.ending_cut
    return True


def build_samples(
    examples: list[Example], msl: int, min_len: int, pad_id: int, eos_id: int
) -> tuple[np.ndarray, FinetuneStats]:
    """Drop over-long / too-short examples, pad the rest -> ([n, 3, msl] int32, stats)."""
    st = FinetuneStats()
    kept = [ex for ex in examples if keep_example(ex, msl, min_len, st)]
    st.num_sequences_before_packing = len(kept)
    if not kept:
        return np.zeros((0, 3, msl), dtype=np.int32), st
    samples = np.stack([sample_from_example(ex, msl, pad_id) for ex in kept])
    st.n_examples = len(samples)
    st.num_tokens = len(samples) * msl
    st.num_pad_tokens = int((samples[:, 0] == pad_id).sum())
    st.non_pad_tokens = int(((samples[:, 0] != pad_id) & (samples[:, 0] != eos_id)).sum())
    st.loss_valid_tokens = int(samples[:, 1].sum())
    st.num_masked_tokens = st.num_tokens - st.loss_valid_tokens
    return samples, st


# ------------------------------------------------------------------------------- preprocess hook


def parse_records(kind: str, location: str, batch: Any) -> list[tuple[str, Any]]:
    """(file:line, record dict) for a batch of raw JSON lines or column dicts; blank lines skipped."""
    out: list[tuple[str, Any]] = []
    for offset, rec in enumerate(batch.records):
        where = f"{location}:{batch.first_line + offset}"
        if kind == "jsonl":
            if not rec.strip():
                continue
            try:
                obj = json.loads(rec.decode("utf-8"))
            except UnicodeDecodeError as err:
                raise DataError(f"{where}: not valid UTF-8 (byte {err.start} of the line)") from None
            except json.JSONDecodeError as err:
                raise DataError(f"{where}: malformed JSON ({err.msg} at column {err.colno})") from None
            out.append((where, obj))
        elif kind == "text":
            raise DataError(
                f"{location}: finetuning reads records (jsonl, parquet, a datasets directory), not plain text"
            )
        else:
            out.append((where, rec))
    return out


KNOWN_ROLES = ("system", "user", "assistant")


@dataclass
class ChatNotes:
    """What a run says about its chat records: the skipped ones (file:line: why, in order) and
    conversations ModelZoo keeps as they are that are likely mistakes (what -> [count, first file:line])."""

    skipped: list[str] = field(default_factory=list)
    odd: dict[str, list[Any]] = field(default_factory=dict)

    def note(self, what: str, where: str) -> None:
        got = self.odd.setdefault(what, [0, where])
        got[0] += 1

    def add(self, other: ChatNotes) -> None:
        self.skipped += other.skipped
        for what, (n, where) in other.odd.items():
            got = self.odd.setdefault(what, [0, where])
            got[0] += n

    def warnings(self) -> list[str]:
        return [
            f"warning: {n:,} chat record{'s' if n != 1 else ''} with {what} (first at {where}); kept "
            "as ModelZoo's chat_read_hook keeps them: only turns with role 'assistant' have loss weight 1"
            for what, (n, where) in self.odd.items()
        ]


def _note_roles(rec: dict[str, Any], spec: FinetuneSpec, where: str, notes: ChatNotes) -> None:
    """Kept conversations that ModelZoo trains differently from what their author likely meant."""
    turns = rec[str(spec.multi_turn_key)]
    roles = [t[str(spec.multi_turn_role_key)] for t in turns]
    for role in dict.fromkeys(r for r in roles if r not in KNOWN_ROLES):
        notes.note(f"role '{role}'", where)
    rest = roles[1:] if roles[0] == "system" else roles
    if "system" in rest:
        notes.note("a system turn after the first turn", where)
    if any(rest[i] == "assistant" for i in range(0, len(rest), 2)):
        notes.note("an assistant turn before the user's", where)
    if "assistant" not in rest:
        notes.note("no assistant turn", where)


@dataclass
class FinetuneBatch:
    samples: np.ndarray
    stats: FinetuneStats = field(default_factory=FinetuneStats)
    error: tuple[str, str | None] | None = None
    # VSL: per record its read-chunk size (vsl.record_size) and its example (ids, mask) when kept
    records: list[tuple[tuple[int, int, bool], tuple[list[int], list[int]] | None]] | None = None
    notes: ChatNotes = field(default_factory=ChatNotes)
    text: TextCounts = field(default_factory=TextCounts)


def encode_batch(
    tok: Any,
    kind: str,
    location: str,
    batch: Any,
    spec: FinetuneSpec,
    msl: int,
    min_len: int,
    pack: bool,
    keep_whole_last_character: bool = False,
) -> FinetuneBatch:
    """A batch of records -> samples (run in the preprocess workers); with `pack` (VSL) -> the kept
    examples and every record's read-chunk size, packed in the main process (data/vsl.py)."""
    eos_text = tok.hf.id_to_token(tok.eos_id)
    examples: list[Example] = []
    sized: list[tuple[tuple[int, int, bool], Example | None]] = []
    notes = ChatNotes()
    counts = TextCounts()
    _COUNTS[:] = [counts]  # _clean counts each region into it
    for where, rec in parse_records(kind, location, batch):
        ex = encode_record(rec, spec, tok.hf, eos_text, where, msl, keep_whole_last_character)
        if pack:
            sized.append((_record_size(rec, spec), None if isinstance(ex, str) else ex))
        if isinstance(ex, str):
            notes.skipped.append(f"{where}: {ex}")
            continue
        if spec.hook == CHAT_HOOK:
            _note_roles(rec, spec, where, notes)
        examples.append(ex)
    _COUNTS.clear()
    if pack:
        st = FinetuneStats()
        records = [
            (size, (ex.ids, ex.mask) if ex is not None and keep_example(ex, msl, min_len, st) else None)
            for size, ex in sized
        ]
        st.num_sequences_before_packing = sum(ex is not None for _, ex in records)
        st.examples_skipped_chat = len(notes.skipped)
        empty = np.zeros((0, 5, msl), dtype=np.int32)
        return FinetuneBatch(empty, st, records=records, notes=notes, text=counts)
    samples, st = build_samples(examples, msl, min_len, tok.pad_id, tok.eos_id)
    st.examples_skipped_chat = len(notes.skipped)
    return FinetuneBatch(samples, st, notes=notes, text=counts)


def _record_size(rec: dict[str, Any], spec: FinetuneSpec) -> tuple[int, int, bool]:
    """What ModelZoo's reader counts for a record: its data keys, numbers as strings (number_to_string)."""
    entry = {k: rec.get(k) for k in spec.data_keys()}
    return record_size({k: str(v) if isinstance(v, numbers.Number) else v for k, v in entry.items()})


def check_options(opts: Any) -> None:
    """What finetuning mode refuses in PreprocessOptions (called by run_preprocess)."""
    from gptx_cli.errors import UsageError

    if opts.finetuning is None:
        raise UsageError(
            "--mode finetuning needs --prompt-key and --completion-key (or --chat-key for chat records)"
        )
    if opts.dataset is not None:
        raise UsageError("--mode finetuning reads --input files; --dataset is a pretraining recipe")
    if opts.output_format != "hdf5":
        raise UsageError("--mode finetuning writes hdf5 samples (--output-format hdf5)")
    if opts.train_tokenizer:
        raise UsageError("--train-tokenizer is for pretraining corpora, not --mode finetuning")
    if opts.pile_subsets:
        raise UsageError("--pile-subsets is for the Pile, not --mode finetuning")
    if opts.text_key != "text":
        raise UsageError("--text-key has no effect with --mode finetuning (use --prompt-key / --chat-key)")
    if opts.short_seq_prob:
        raise UsageError("short_seq_prob is a pretraining setting; ModelZoo's finetuning mode ignores it")
    if opts.pack_sequences:
        raise UsageError(
            "--pack-sequences with --mode finetuning: ModelZoo's finetuning generator never reads pack_sequences "
            "(each example is padded to its own sample)",
            hint="--use-vsl packs several examples per sample, each attending only to itself",
        )


def options_from_flags(
    values: dict[str, Any],
    mode: str | None,
    prompt_key: str | None,
    completion_key: str | None,
    chat_key: str | None,
    data_splits: str | None,
) -> None:
    """`gptx preprocess --mode finetuning ...` -> PreprocessOptions values (in place)."""
    from gptx_cli.errors import UsageError

    mode = mode or values.get("mode") or "pretraining"
    if mode != "finetuning":
        flag = (
            next(
                f
                for f, v in (
                    ("--prompt-key", prompt_key),
                    ("--completion-key", completion_key),
                    ("--chat-key", chat_key),
                    ("--data-splits", data_splits),
                )
                if v
            )
            if (prompt_key or completion_key or chat_key or data_splits)
            else None
        )
        if flag:
            raise UsageError(f"{flag} needs --mode finetuning")
        values["mode"] = mode
        return
    values["mode"] = "finetuning"
    values.setdefault("pack_sequences", False)  # refused when given (check_options): packing is --use-vsl
    spec = values.get("finetuning")
    if prompt_key or completion_key:
        if chat_key:
            raise UsageError("--chat-key excludes --prompt-key / --completion-key")
        if not (prompt_key and completion_key):
            raise UsageError("--mode finetuning needs both --prompt-key and --completion-key")
        spec = make_spec(
            PROMPT_COMPLETION_HOOK,
            {"prompt_key": prompt_key, "completion_key": completion_key},
            where="--prompt-key/--completion-key",
        )
    elif chat_key:
        spec = make_spec(
            CHAT_HOOK,
            {"multi_turn_key": chat_key, "multi_turn_role_key": "role", "multi_turn_content_key": "content"},
            where="--chat-key",
        )
    if spec is None:
        raise UsageError("--mode finetuning needs --prompt-key and --completion-key, or --chat-key")
    if data_splits:
        splits: dict[str, Any] = {}
        for part in data_splits.split(","):
            name, _, frac = part.partition("=")
            try:
                splits[name.strip()] = {"split_fraction": float(frac)}
            except ValueError:
                raise UsageError(f"--data-splits: '{part}' is not name=fraction") from None
        values["data_splits"] = splits
    values["finetuning"] = spec


class _FlagsDoc:
    """What data.splits.run_splits asks of a plan's YAML document, for --data-splits."""

    file = "--data-splits"

    def error(self, path: Any, message: str) -> Exception:
        from gptx_cli.errors import UsageError

        return UsageError(f"--data-splits: {message}")


@dataclass
class _FlagsPlan:
    data_splits: dict[str, Any]
    split_seed: int
    file: str = "--data-splits"
    doc: Any = field(default_factory=_FlagsDoc)
    context_splits: Any = None
    data_splits_dir: str | None = None


def run_from_flags(values: dict[str, Any]) -> dict[str, Any]:
    """`gptx preprocess --mode finetuning ...`: with --data-splits, ModelZoo's data_split semantics
    (data.splits.run_splits, seeded by --seed as processing.split_seed), else one output directory."""
    from gptx_cli.data.preprocess import PreprocessOptions, run_preprocess

    splits = values.pop("data_splits", None)
    opts = PreprocessOptions(**values)
    if not splits:
        return run_preprocess(opts)
    from gptx_cli.data.splits import run_splits

    return run_splits(_FlagsPlan(splits, int(values.get("seed") or 0)), opts)


def run_v2_finetuning(plan: Any, values: dict[str, Any]) -> dict[str, Any]:
    """`setup.mode: finetuning` of a ModelZoo v2 YAML (data.v2config.run_v2 calls it)."""
    from gptx_cli.data.preprocess import PreprocessOptions, run_preprocess

    ds = plan.raw.get("dataset") or {}
    proc = plan.raw.get("processing") or {}
    if ds.get("chat_template"):
        raise plan.doc.error(
            ("dataset", "chat_template"),
            "dataset.chat_template is not supported by gptx (chat records use ChatML, ModelZoo's template "
            "for tokenizers without one)",
        )
    cleaning = values.pop("cleaning", None)
    extra: dict[str, Any] = {}
    if "sep_token" in ds:
        extra["sep_token"] = ds["sep_token"]
    try:
        spec = make_spec(
            plan.hook,
            {k: v for k, v in plan.hook_kwargs.items()},
            where=f"{plan.file}: processing.read_hook_kwargs",
            end_of_turn_token=ds.get("end_of_turn_token") or proc.get("end_of_turn_token"),
            use_ftfy=bool(cleaning.use_ftfy) if cleaning is not None else True,
            ftfy_normalizer=cleaning.ftfy_normalizer if cleaning is not None else "NFC",
            **extra,
        )
    except ConfigError as err:
        raise plan.doc.error(("processing", "read_hook_kwargs"), err.message) from None
    if cleaning is not None:
        spec.wikitext_detokenize = bool(cleaning.wikitext_detokenize)
    spec.truncate_to_msl = getattr(plan, "truncate_to_msl", None)  # checked by v2config.load_v2_config
    values["mode"], values["finetuning"] = "finetuning", spec
    # ModelZoo's finetuning generator pads each example; VSLFinetuningTokenGenerator (dataset.use_vsl)
    # packs them. Neither reads pack_sequences (v2config warns that it has no effect).
    values["pack_sequences"] = False
    values["use_vsl"] = bool(ds.get("use_vsl", False))
    opts = PreprocessOptions(**values)
    if plan.data_splits or plan.context_splits:
        from gptx_cli.data.splits import run_splits

        return run_splits(plan, opts)
    return run_preprocess(opts)
