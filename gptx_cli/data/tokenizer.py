"""Tokenizers: GPT-2 BPE file sets, any `tokenizer.json`, the `gpt2` / `neox-20b` presets, and a fast
tiktoken encoder used where it reproduces the reference exactly.

EOS and PAD follow ModelZoo: GPT-2 eos = pad = `<|endoftext|>` (50256); GPT-NeoX eos = `<|endoftext|>`
(0), pad = `<|padding|>` (1).

Encoding engines. `tokenizers` (Hugging Face) is the reference for every tokenizer. For the GPT-2
vocabulary, `tiktoken` built from the same local ranks gives identical ids several times faster
(tests/data/test_tokenizer.py compares both on real text and edge cases), so `backend="auto"` picks it
there. GPT-NeoX is kept on `tokenizers`: its NFC normaliser and its 24 added whitespace-run tokens
(matched before BPE, normalised) are not something tiktoken's regex + ranks model reproduces, and we
have no proof of exactness, so forcing `tiktoken` on it is refused.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from gptx_cli.errors import DataError, UsageError

PRESETS = ("gpt2", "neox-20b")
TOKENIZER_DIR_ENV = "GPTX_TOKENIZER_DIR"
BACKENDS = ("auto", "tokenizers", "tiktoken")

# GPT-2's pre-tokenisation regex (identical in OpenAI's encoder.py, `tokenizers` ByteLevel and tiktoken).
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""

# File sets a tokenizer directory may hold, in the order they are tried.
_GPT2_FILE_SETS = (
    ("gpt2-encoder.json", "gpt2-vocab.bpe"),  # ModelZoo naming
    ("encoder.json", "vocab.bpe"),  # OpenAI naming
    ("vocab.json", "merges.txt"),  # Hugging Face naming
)
_TOKENIZER_JSON_NAMES = ("tokenizer.json", "neox-encoder.json", "20B_tokenizer.json")
_PRESET_SUBDIRS = {"gpt2": ("gpt2",), "neox-20b": ("neox-20b", "neox", "gpt-neox-20b")}
_HUB_IDS = {"gpt2": "gpt2", "neox-20b": "EleutherAI/gpt-neox-20b"}
_EOS_NAMES = ("<|endoftext|>", "</s>", "<eos>", "<|end_of_text|>")
_PAD_NAMES = ("<|padding|>", "<pad>", "<|pad|>")


@lru_cache(maxsize=1)
def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map (the alphabet of encoder.json keys)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    n = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return dict(zip(printable, (chr(c) for c in chars), strict=True))


@dataclass
class Tokenizer:
    """A loaded tokenizer. `encode` never adds EOS; the preprocessor appends it."""

    name: str
    hf: Any  # tokenizers.Tokenizer: the reference engine (and always used for decode)
    eos_id: int
    pad_id: int
    backend: str = "tokenizers"
    tiktoken_encoding: Any = None
    source: str | None = None  # the file or directory it was loaded from

    @property
    def vocab_size(self) -> int:
        return int(self.hf.get_vocab_size(with_added_tokens=True))

    def encode(self, text: str) -> list[int]:
        if self.tiktoken_encoding is not None:
            return self.tiktoken_encoding.encode(text, allowed_special="all")
        return self.hf.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        if self.tiktoken_encoding is not None:
            enc = self.tiktoken_encoding
            return [enc.encode(t, allowed_special="all") for t in texts]
        return [e.ids for e in self.hf.encode_batch(list(texts), add_special_tokens=False)]

    def encode_batch_arrays(self, texts: Sequence[str]) -> list[Any]:
        """Like encode_batch, as int32 numpy arrays (the preprocessor's fast path)."""
        import numpy as np

        if self.tiktoken_encoding is not None:
            enc = self.tiktoken_encoding
            return [enc.encode_to_numpy(t, allowed_special="all").astype(np.int32) for t in texts]
        # encode_batch_fast skips character offsets, which nothing here needs
        encode = getattr(self.hf, "encode_batch_fast", self.hf.encode_batch)
        return [np.asarray(e.ids, dtype=np.int32) for e in encode(list(texts), add_special_tokens=False)]

    def decode(self, ids: Sequence[int]) -> str:
        return self.hf.decode(list(ids), skip_special_tokens=False)

    def token_to_id(self, token: str) -> int | None:
        return self.hf.token_to_id(token)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source": self.source,
            "backend": self.backend,
            "vocab_size": self.vocab_size,
            "eos_id": self.eos_id,
            "pad_id": self.pad_id,
        }


def _gpt2_hf_tokenizer(encoder_json: Path, vocab_bpe: Path) -> Any:
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, pre_tokenizers
    from tokenizers.models import BPE

    tok = HFTokenizer(BPE.from_file(str(encoder_json), str(vocab_bpe)))  # skips the "#version" line
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    if tok.token_to_id("<|endoftext|>") is not None:
        tok.add_special_tokens(["<|endoftext|>"])
    return tok


def _tiktoken_from_hf_bytelevel(hf: Any, name: str) -> Any:
    """A tiktoken Encoding with the same ranks as a byte-level BPE whose token ids follow merge order."""
    import tiktoken

    to_latin1 = str.maketrans({c: chr(b) for b, c in _bytes_to_unicode().items()})
    specials: dict[str, int] = {}
    ranks: dict[bytes, int] = {}
    added = {t.content for t in hf.get_added_tokens_decoder().values()}
    for token, idx in hf.get_vocab(with_added_tokens=True).items():
        if token in added:
            specials[token] = idx
            continue
        ranks[token.translate(to_latin1).encode("latin-1")] = idx
    return tiktoken.Encoding(
        name=f"gptx-{name}", pat_str=GPT2_PATTERN, mergeable_ranks=ranks, special_tokens=specials
    )


def _is_gpt2_vocabulary(hf: Any) -> bool:
    """True for OpenAI's GPT-2 BPE: byte-level, no normaliser, 50257 ids, `<|endoftext|>` = 50256 only."""
    from tokenizers import pre_tokenizers
    from tokenizers.models import BPE

    pre = hf.pre_tokenizer
    return (
        hf.normalizer is None
        and isinstance(pre, pre_tokenizers.ByteLevel)
        and not pre.add_prefix_space
        and pre.use_regex
        and isinstance(hf.model, BPE)
        and hf.get_vocab_size(with_added_tokens=True) == 50257
        and [t.content for t in hf.get_added_tokens_decoder().values()] == ["<|endoftext|>"]
        and hf.token_to_id("<|endoftext|>") == 50256
        and hf.token_to_id("Ġthe") == 262
    )


def _special_ids(hf: Any) -> tuple[int, int]:
    eos = next((hf.token_to_id(t) for t in _EOS_NAMES if hf.token_to_id(t) is not None), None)
    if eos is None:
        raise DataError(
            "tokenizer has no end-of-text token (looked for " + ", ".join(_EOS_NAMES) + ")",
            hint="add one as a special token",
        )
    pad = next((hf.token_to_id(t) for t in _PAD_NAMES if hf.token_to_id(t) is not None), eos)
    return int(eos), int(pad)


def _find_in_dir(d: Path) -> tuple[str, Path, Path | None] | None:
    """('gpt2', encoder, merges) or ('json', tokenizer.json, None) for a directory holding one."""
    for enc, merges in _GPT2_FILE_SETS:
        if (d / enc).is_file() and (d / merges).is_file():
            return "gpt2", d / enc, d / merges
    for name in _TOKENIZER_JSON_NAMES:
        if (d / name).is_file():
            return "json", d / name, None
    return None


def _resolve_preset(
    name: str, tokenizer_dir: str | os.PathLike[str] | None
) -> tuple[str, Path, Path | None] | None:
    roots = [Path(p) for p in (tokenizer_dir, os.environ.get(TOKENIZER_DIR_ENV)) if p]
    for root in roots:
        for sub in (*_PRESET_SUBDIRS[name], ""):
            found = _find_in_dir(root / sub if sub else root)
            if found is None:
                continue
            # A directory holding GPT-2 files answers for `gpt2` only, and a tokenizer.json for `neox-20b`.
            if (name == "gpt2") == (found[0] == "gpt2"):
                return found
    return None


def _load_from_hub(name: str, searched: list[str]) -> Any:
    where = ", ".join(searched) if searched else f"no --tokenizer-dir and ${TOKENIZER_DIR_ENV} unset"
    hint = f"pass --tokenizer-dir DIR or set {TOKENIZER_DIR_ENV} to a directory holding {name}/"
    if os.environ.get("HF_HUB_OFFLINE") in ("1", "true", "True") or os.environ.get("TRANSFORMERS_OFFLINE"):
        raise DataError(
            f"tokenizer preset '{name}' not found locally ({where}) and the hub is offline", hint=hint
        )
    from tokenizers import Tokenizer as HFTokenizer

    try:
        return HFTokenizer.from_pretrained(_HUB_IDS[name])
    except Exception as err:  # network errors come in many types; all mean the same to the user
        raise DataError(
            f"tokenizer preset '{name}' not found locally ({where}) and downloading "
            f"'{_HUB_IDS[name]}' failed: {type(err).__name__}",
            hint=hint,
        ) from None


def load_tokenizer(
    name_or_path: str | os.PathLike[str],
    *,
    tokenizer_dir: str | os.PathLike[str] | None = None,
    backend: str = "auto",
) -> Tokenizer:
    """Load a preset name (`gpt2`, `neox-20b`), a `tokenizer.json` file, or a directory holding one of the
    GPT-2 file sets or a tokenizer.json. `backend` picks the encoding engine (see module docstring)."""

    if backend not in BACKENDS:
        raise UsageError(f"unknown tokenizer backend '{backend}' (choose from {', '.join(BACKENDS)})")
    spec = str(name_or_path)
    path = Path(spec).expanduser()
    found: tuple[str, Path, Path | None] | None = None
    hf: Any = None
    name = spec
    if spec in PRESETS and not path.exists():
        found = _resolve_preset(spec, tokenizer_dir)
        if found is None:
            searched = [str(p) for p in (tokenizer_dir, os.environ.get(TOKENIZER_DIR_ENV)) if p]
            hf = _load_from_hub(spec, searched)
    elif path.is_dir():
        found = _find_in_dir(path)
        if found is None:
            raise DataError(
                f"tokenizer directory {path} holds no tokenizer.json, gpt2-encoder.json + gpt2-vocab.bpe, "
                "encoder.json + vocab.bpe, or vocab.json + merges.txt"
            )
        name = path.name
    elif path.is_file():
        found = ("json", path, None)
        name = path.stem
    else:
        raise DataError(
            f"tokenizer '{spec}' is neither a preset ({', '.join(PRESETS)}) nor an existing file or directory"
        )
    if found is not None:
        return _load_files(name, *found, backend, found[1].stat().st_mtime_ns)
    return _finish(name, hf, spec, backend)


@lru_cache(maxsize=8)
def _load_files(
    name: str, kind: str, first: Path, second: Path | None, backend: str, _mtime: int
) -> Tokenizer:
    """Load (and cache per process: building GPT-2 takes ~0.3 s) a tokenizer from its files."""
    from tokenizers import Tokenizer as HFTokenizer

    try:
        if kind == "gpt2":
            assert second is not None
            hf = _gpt2_hf_tokenizer(first, second)
        else:
            hf = HFTokenizer.from_file(str(first))
    except Exception as err:  # tokenizers raises a plain Exception on bad JSON
        raise DataError(f"cannot read tokenizer {first}: {type(err).__name__}: {err}") from None
    return _finish(name, hf, str(first.parent if kind == "gpt2" else first), backend)


def _finish(name: str, hf: Any, source: str, backend: str) -> Tokenizer:
    eos, pad = _special_ids(hf)
    tok = Tokenizer(name=name, hf=hf, eos_id=eos, pad_id=pad, source=source)
    gpt2_like = _is_gpt2_vocabulary(hf)
    if backend == "tiktoken" and not gpt2_like:
        raise UsageError(
            f"--tokenizer-backend tiktoken reproduces only the GPT-2 vocabulary exactly; '{name}' "
            "(normaliser, added tokens or vocabulary differ) must use --tokenizer-backend tokenizers"
        )
    if backend in ("auto", "tiktoken") and gpt2_like:
        tok.tiktoken_encoding = _tiktoken_from_hf_bytelevel(hf, name)
        tok.backend = "tiktoken"
    return tok
