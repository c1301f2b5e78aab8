"""Tokenizers: GPT-2 BPE file sets, any `tokenizer.json`, the `gpt2` / `neox-20b` presets, and a fast
tiktoken encoder used where it reproduces the reference exactly.

EOS and PAD follow ModelZoo: GPT-2 eos = pad = `<|endoftext|>` (50256); GPT-NeoX eos = `<|endoftext|>`
(0), pad = `<|padding|>` (1).

Encoding engines. `tokenizers` (Hugging Face) is the reference for every tokenizer. For the GPT-2
vocabulary, `tiktoken` built from the same local ranks gives identical ids several times faster
(tests/data/test_tokenizer.py compares both on real text and edge cases), so `backend="auto"` picks it
there. GPT-NeoX stays on `tokenizers` under `auto`: its NFC normaliser and its 23 added whitespace-run
tokens (matched leftmost-longest on the normalised text, before BPE) are reproduced here around tiktoken
(NFC in Python, then a longest-first regex split), and the tests find identical ids on real text and
edge cases, but that is evidence, not a proof, so it is only used when asked for (`backend="tiktoken"`).
Other tokenizers (a normaliser other than NFC, prefix spaces, stripping added tokens, ids out of merge
order) are refused by the tiktoken engine.
"""

from __future__ import annotations

import json
import os
import re
import unicodedata
from collections.abc import Iterable, Sequence
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
    tiktoken_engine: _TiktokenEngine | None = None
    source: str | None = None  # the file or directory it was loaded from

    @property
    def vocab_size(self) -> int:
        return int(self.hf.get_vocab_size(with_added_tokens=True))

    def encode(self, text: str) -> list[int]:
        if self.tiktoken_engine is not None:
            return self.tiktoken_engine.encode(text)
        return self.hf.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        if self.tiktoken_engine is not None:
            return [self.tiktoken_engine.encode(t) for t in texts]
        return [e.ids for e in self.hf.encode_batch(list(texts), add_special_tokens=False)]

    def encode_batch_arrays(self, texts: Sequence[str]) -> list[Any]:
        """Like encode_batch, as int32 numpy arrays (the preprocessor's fast path)."""
        import numpy as np

        if self.tiktoken_engine is not None:
            return [self.tiktoken_engine.encode_array(t) for t in texts]
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


@dataclass
class _TiktokenEngine:
    """tiktoken with a byte-level BPE's ranks, plus what `tokenizers` does around BPE for NeoX-like files."""

    enc: Any  # tiktoken.Encoding
    nfc: bool = False  # apply the NFC normaliser first
    added_re: re.Pattern[str] | None = None  # added tokens, longest first: split out before BPE
    added_ids: dict[str, int] | None = None

    def _pieces(self, text: str) -> list[str | int]:
        assert self.added_re is not None and self.added_ids is not None
        if self.nfc:
            text = unicodedata.normalize("NFC", text)
        pieces: list[str | int] = []
        pos = 0
        for m in self.added_re.finditer(text):
            if m.start() > pos:
                pieces.append(text[pos : m.start()])
            pieces.append(self.added_ids[m.group()])
            pos = m.end()
        if pos < len(text):
            pieces.append(text[pos:])
        return pieces

    def encode(self, text: str) -> list[int]:
        if self.added_re is None:  # GPT-2: its one special token is tiktoken's own special
            return self.enc.encode(text, allowed_special="all")
        out: list[int] = []
        for p in self._pieces(text):
            if isinstance(p, int):
                out.append(p)
            else:
                out += self.enc.encode_ordinary(p)
        return out

    def encode_array(self, text: str) -> Any:
        import numpy as np

        if self.added_re is None:
            return self.enc.encode_to_numpy(text, allowed_special="all").astype(np.int32)
        parts = [
            np.array([p], dtype=np.int32)
            if isinstance(p, int)
            else self.enc.encode_to_numpy(p, disallowed_special=())
            for p in self._pieces(text)
        ]
        return np.concatenate(parts).astype(np.int32) if parts else np.zeros(0, dtype=np.int32)


def _tiktoken_engine(hf: Any, name: str, gpt2_like: bool) -> _TiktokenEngine | None:
    """The tiktoken engine for `hf`, or None when its pipeline is not one tiktoken can reproduce."""
    import json

    import tiktoken
    from tokenizers import normalizers, pre_tokenizers
    from tokenizers.models import BPE

    pre = hf.pre_tokenizer
    if not (
        isinstance(hf.model, BPE)
        and isinstance(pre, pre_tokenizers.ByteLevel)
        and not pre.add_prefix_space
        and pre.use_regex
        and (hf.normalizer is None or isinstance(hf.normalizer, normalizers.NFC))
    ):
        return None
    added_tokens = list(hf.get_added_tokens_decoder().values())
    if any(t.lstrip or t.rstrip or t.single_word for t in added_tokens):
        return None
    # Specials matched on the raw text must survive NFC unchanged for one split after NFC to be the same.
    if any(not t.normalized and not t.content.isascii() for t in added_tokens):
        return None
    if not gpt2_like:
        # tiktoken merges by the rank of the merged token: that is the merge order only if ids follow it.
        model = json.loads(hf.to_str())["model"]
        vocab, merges = model["vocab"], model["merges"]
        ids = [vocab.get(m.replace(" ", "", 1) if isinstance(m, str) else "".join(m)) for m in merges]
        if any(i is None for i in ids) or any(b <= a for a, b in zip(ids, ids[1:], strict=False)):
            return None
    to_latin1 = str.maketrans({c: chr(b) for b, c in _bytes_to_unicode().items()})
    added = {t.content for t in added_tokens}
    added_ids = {t: int(hf.token_to_id(t)) for t in added}
    ranks: dict[bytes, int] = {}
    for token, idx in hf.get_vocab(with_added_tokens=False).items():
        if token in added:
            continue
        raw = token.translate(to_latin1)
        if any(ord(c) > 255 for c in raw):
            return None  # not a byte-level vocabulary
        ranks[raw.encode("latin-1")] = idx
    if gpt2_like:
        enc = tiktoken.Encoding(
            f"gptx-{name}", pat_str=GPT2_PATTERN, mergeable_ranks=ranks, special_tokens=added_ids
        )
        return _TiktokenEngine(enc)
    enc = tiktoken.Encoding(f"gptx-{name}", pat_str=GPT2_PATTERN, mergeable_ranks=ranks, special_tokens={})
    pattern = (
        re.compile("|".join(re.escape(t) for t in sorted(added, key=len, reverse=True))) if added else None
    )
    nfc = isinstance(hf.normalizer, normalizers.NFC)
    if pattern is None:
        pattern = re.compile(r"(?!x)x")  # matches nothing; keeps the NFC path
    return _TiktokenEngine(enc, nfc=nfc, added_re=pattern, added_ids=added_ids)


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


GPT2_PAIR_SEP = "::"


def gpt2_pair_spec(encoder_json: str, vocab_bpe: str) -> str:
    """A tokenizer spec for a GPT-2 encoder.json + vocab.bpe pair with any file names
    (ModelZoo's `custom_tokenizer: gpt2tokenizer`): `ENCODER_JSON::VOCAB_BPE`."""
    return f"{encoder_json}{GPT2_PAIR_SEP}{vocab_bpe}"


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
    if GPT2_PAIR_SEP in spec and not path.exists():
        enc, bpe = (Path(p).expanduser() for p in spec.split(GPT2_PAIR_SEP, 1))
        for p in (enc, bpe):
            if not p.is_file():
                raise DataError(f"GPT-2 tokenizer file {p} does not exist")
        found = ("gpt2", enc, bpe)
        name = "gpt2"
    elif spec in PRESETS and not path.exists():
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
    # auto: tiktoken for GPT-2 only (see the module docstring); tiktoken: wherever it can be reproduced.
    if backend == "tiktoken" or (backend == "auto" and gpt2_like):
        tok.tiktoken_engine = _tiktoken_engine(hf, name, gpt2_like)
        if tok.tiktoken_engine is None:
            raise UsageError(
                f"--tokenizer-backend tiktoken cannot reproduce '{name}' (its normaliser, pre-tokenizer, "
                "added tokens or id order differ from byte-level BPE); use --tokenizer-backend tokenizers"
            )
        tok.backend = "tiktoken"
    return tok


def recorded_tokenizer(data_dirs: Iterable[str]) -> str | None:
    """The tokenizer `gptx preprocess` recorded in a data dir's data_params.json (gptx.processing.tokenizer;
    processing.tokenizer in the files of gptx before #25)."""
    for d in data_dirs:
        params = Path(d) / "data_params.json"
        try:
            data = json.loads(params.read_text())
            recorded = data.get("gptx", {}).get("processing", {}).get("tokenizer") or data.get(
                "processing", {}
            ).get("tokenizer")
        except (OSError, ValueError, AttributeError):
            continue
        if recorded:
            return str(recorded)
    return None
