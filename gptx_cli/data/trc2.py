"""`gptx preprocess --dataset trc2`: ModelZoo's TRC2 recipe (data_preparation/nlp/gptj) in one command.

ModelZoo prepares Thomson Reuters' TRC2 corpus (`TRC2-headlines-docs-TRECBLOG.v2`, from NIST) for
`params_gptj_6B_TRC2.yaml` in three steps, reproduced here:

1. README.md's clean-up, line by line, each `sed 's|...||'` replacing the FIRST match on the line only
   (no `g` flag), in this order: the first closing tag `</[A-Z0-9]*>`; the first opening tag
   `<[A-Z0-9]*>`; the leading run of `[-0-9: ]` (the date/time stamp); the first `TRC2-[-0-9]*` id;
   the span from the first `[` to the last `]`; everything from `(Click on the Z` to the end of the
   line. Then `iconv -f utf-8 -t utf-8 -c`: bytes that are not valid UTF-8 are dropped. The rules
   run on bytes (sed in the C locale).
2. split_trc_dataset.py: the cleaned lines in files of `buffer_len` (10,000) lines, the last
   `int(val_split_ratio * n_files)` (10%) of the files for evaluation. Its loop never writes the
   final chunk (the lines after the last full `buffer_len` boundary, or the last full chunk when the
   count divides evenly); gptx does the same and says how many lines that leaves out.
3. create_hdf5_dataset.py with `--ftfy`: its reader (`Reader.read_txt`) yields a whole file as one
   document, so each split file is one document: ftfy-fixed (NFC), GPT-2 tokenised, EOS appended,
   packed into msl+1 windows (msl 512: the config's max_position_embeddings).

Output: `<base>/train` and `<base>/eval` (HDF5 samples and data_params.json), base
`./language/datasets/model_studio/TRC2/gpt2-tokenized` (the paths the config reads) unless
--output-dir says otherwise; the split files and ModelZoo's train_meta.txt / val_meta.txt go to
`<base>/split_files`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from gptx_cli.errors import DataError, UsageError
from gptx_cli.fsutil import atomic_dir

TRC2_FILE = "TRC2-headlines-docs-TRECBLOG.v2"
DEFAULT_BASE = "./language/datasets/model_studio/TRC2/gpt2-tokenized"
DEFAULT_MSL = 512
BUFFER_LEN = 10_000
VAL_SPLIT_RATIO = 0.1

# README.md's sed commands, in order; each replaces the first match only.
_RULES = (
    re.compile(rb"</[A-Z0-9]*>"),
    re.compile(rb"<[A-Z0-9]*>"),
    re.compile(rb"[-0-9: ]*"),
    re.compile(rb"TRC2-[-0-9]*"),
    re.compile(rb"\[.*\]"),
    re.compile(rb"\(Click on the Z.*"),
)


_NEWLINES = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+$")


def clean_line(line: bytes) -> str:
    """One line (without its newline) through README.md's sed commands and `iconv -c`."""
    for rule in _RULES:
        line = rule.sub(b"", line, count=1)
    return line.decode("utf-8", errors="ignore")


@dataclass
class Trc2Split:
    train: list[Path]
    eval: list[Path]
    lines: int
    left_out: int  # lines split_trc_dataset.py's loop never writes


def resolve_input(inputs: list[str]) -> Path:
    """The TRC2 file from --input (the file itself, or a directory holding it); one-line errors."""
    if len(inputs) != 1:
        raise UsageError(f"--dataset trc2 takes one --input: the {TRC2_FILE} file (got {len(inputs)})")
    p = Path(inputs[0]).expanduser()
    if p.is_dir():
        p = p / TRC2_FILE
    if not p.is_file():
        raise DataError(f"TRC2 input {p} does not exist", hint=f"pass --input path/to/{TRC2_FILE}")
    if p.stat().st_size == 0:
        raise DataError(f"TRC2 input {p} is empty")
    return p


def split_trc2(source: Path, split_dir: Path, buffer_len: int, val_split_ratio: float) -> Trc2Split:
    """Clean `source` and write ModelZoo's split files and meta files into `split_dir` (atomically)."""
    if buffer_len < 1 or not 0.0 <= val_split_ratio < 1.0:
        raise UsageError("--buffer-len must be positive and --val-split-ratio in [0, 1)")
    with atomic_dir(split_dir) as tmp:
        return _split(source, split_dir, tmp, buffer_len, val_split_ratio)


def _split(source: Path, split_dir: Path, tmp: Path, buffer_len: int, val_split_ratio: float) -> Trc2Split:
    prefix = f"{source.name}.clean"
    files: list[Path] = []
    buf: list[str] = []
    lines = 0
    with open(source, "rb") as fh:
        for raw in fh:
            # readlines() keeps each line's newline; the last line may have none.
            ends = raw.endswith(b"\n")
            text = clean_line(raw[:-1] if ends else raw) + ("\n" if ends else "")
            # The script reads the cleaned file in text mode: universal newlines (\r\n and \r end lines too).
            for piece in _NEWLINES.findall(text):
                buf.append(piece.rstrip("\r\n") + "\n" if piece[-1] in "\r\n" else piece)
                lines += 1
                if len(buf) == buffer_len + 1:  # a full chunk is written once a later line exists
                    files.append(_write_chunk(tmp, prefix, len(files), buf[:buffer_len]))
                    buf = buf[buffer_len:]
    left_out = len(buf)  # the final chunk: split_trc_dataset.py's `while end_idx < len(lines)` stops first
    val_count = int(val_split_ratio * len(files))
    train, evals = files[: len(files) - val_count], files[len(files) - val_count :]
    final = [split_dir / f.name for f in files]
    (tmp / "train_meta.txt").write_text("".join(f"{split_dir / f.name}\n" for f in train))
    (tmp / "val_meta.txt").write_text("".join(f"{split_dir / f.name}\n" for f in evals))
    if not lines or all(not (tmp / f.name).stat().st_size for f in files):
        raise DataError(f"TRC2 input {source} holds no text after the clean-up")
    return Trc2Split(final[: len(train)], final[len(train) :], lines, left_out)


def _write_chunk(d: Path, prefix: str, count: int, lines: list[str]) -> Path:
    path = d / f"{prefix}-{count}"
    with open(path, "w", encoding="utf-8", newline="") as fh:
        fh.writelines(lines)
    return path
