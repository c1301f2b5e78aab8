"""What data is this: the one answer to "which tokenizer, msl, mode and statistics" for any directory a
config names.

A preprocess output records them in its `data_params.json` (written last, it also marks the output
complete). The file is in the directory itself or, for a part directory of a split (the Pile layout:
`train_shuffled_msl2048/0/` .. `/9/`, one `data_params.json` in `train_shuffled_msl2048/`), in its
parent; a data_dir naming one `.h5` file reads its directory's. Both gptx's own `data_params.json` and
ModelZoo's are read: the tokenizer is gptx's `gptx.processing.tokenizer` (`processing.tokenizer` in
the files of gptx before #25), else ModelZoo's
`processing.huggingface_tokenizer`, else its `processing.tokenizer_params` GPT-2 file pair.

Train (the tokenizer recorded in each checkpoint's gptx.json), eval, generate, the Hugging Face export
and `gptx inspect` all ask `data_params(dir)` / `tokenizer_of(dirs)`; nothing else reads the file.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gptx_cli.config import load_run_spec
from gptx_cli.data.hdf5 import COMPLETE_MARKER
from gptx_cli.data.tokenizer import GPT2_PAIR_SEP
from gptx_cli.errors import GptxError


@dataclass(frozen=True)
class DataParams:
    """A data dir's recorded description (`raw` is the whole data_params.json)."""

    path: Path  # the data_params.json that answered
    raw: dict[str, Any] = field(repr=False)
    tokenizer: str | None  # a preset name, a path, or "encoder.json::vocab.bpe"; None when not recorded
    max_seq_length: int | None
    mode: str | None  # pretraining, finetuning, nlg, ... (None when not recorded)
    use_vsl: bool
    statistics: dict[str, Any] = field(repr=False)  # the "post-process" section

    @property
    def eos_id(self) -> int | None:
        return _int(self.raw.get("processing", {}).get("eos_id"))

    @property
    def pad_id(self) -> int | None:
        return _int(self.raw.get("processing", {}).get("pad_id"))


def params_file(data_dir: str | Path) -> Path | None:
    """The data_params.json that describes `data_dir` (its own, or its parent's for a part directory or a
    single file), or None."""
    d = Path(data_dir)
    if d.is_file():
        d = d.parent
    for candidate in (d / COMPLETE_MARKER, d.parent / COMPLETE_MARKER):
        if candidate.is_file():
            return candidate
    return None


def data_params(data_dir: str | Path) -> DataParams | None:
    """What `data_dir`'s data_params.json records, or None when there is none (or it is not a JSON
    object: an unreadable marker describes nothing)."""
    path = params_file(data_dir)
    if path is None:
        return None
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(raw, dict):
        return None
    processing = _section(raw, "processing")
    setup = _section(raw, "setup")
    dataset = _section(raw, "dataset")
    ours = _section(
        _section(raw, "gptx"), "processing"
    )  # gptx's own settings (files of gptx before #25: none)
    features = raw.get("features")
    use_vsl = bool(dataset.get("use_vsl")) or (isinstance(features, list) and "attention_span" in features)
    return DataParams(
        path=path,
        raw=raw,
        tokenizer=_recorded_tokenizer({**processing, **ours}, path.parent),
        max_seq_length=_int(processing.get("max_seq_length", ours.get("max_seq_length"))),
        mode=str(ours.get("mode") or processing.get("mode") or setup.get("mode") or "") or None,
        use_vsl=use_vsl,
        statistics=_section(raw, "post-process"),
    )


def tokenizer_of(data_dirs: str | Path | Iterable[str | Path]) -> str | None:
    """The tokenizer the first of `data_dirs` that records one names, or None."""
    if isinstance(data_dirs, (str, Path)):
        data_dirs = [data_dirs]
    for d in data_dirs:
        params = data_params(d)
        if params is not None and params.tokenizer:
            return params.tokenizer
    return None


def _recorded_tokenizer(processing: dict[str, Any], where: Path) -> str | None:
    for key in ("tokenizer", "huggingface_tokenizer"):
        value = processing.get(key)
        if isinstance(value, str) and value:
            return _existing(value, where)
    pair = processing.get("tokenizer_params")
    if isinstance(pair, dict) and pair.get("encoder_file") and pair.get("vocab_file"):
        enc, bpe = (_existing(str(pair[k]), where) for k in ("encoder_file", "vocab_file"))
        return f"{enc}{GPT2_PAIR_SEP}{bpe}"
    return None


def _existing(recorded: str, where: Path) -> str:
    """A recorded relative path that does not exist from here but does beside the data_params.json (a
    tokenizer trained into the output) is returned as that path; anything else as recorded."""
    p = Path(recorded).expanduser()
    if not p.is_absolute() and not p.exists():
        for base in (where, where.parent):
            if (base / p).exists():
                return str(base / p)
            if p.name == "tokenizer.json" and (base / p.name).is_file():
                return str(base / p.name)
    return recorded


def _section(raw: dict[str, Any], key: str) -> dict[str, Any]:
    value = raw.get(key)
    return value if isinstance(value, dict) else {}


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def trained_on(config_yaml: str | Path) -> list[str]:
    """The data dirs a run's config names (train, then validation), or [] when it cannot be read: where a
    checkpoint's `config.yaml` says its data came from."""
    if not Path(config_yaml).is_file():
        return []
    try:
        spec = load_run_spec(config_yaml)
    except GptxError:
        return []
    return [str(d) for data in (spec.train_data, spec.val_data) if data for d in data.data_dir]
