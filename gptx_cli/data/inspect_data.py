"""`gptx inspect`: a preprocessed sample as a reader sees it (ModelZoo's tokenflow, in the terminal).

A sample `[3, msl]` (`[5, msl]` for VSL, `data/vsl.py`) is shown as its token sequence: `input_ids[0]`
followed by the labels, so token j + 1 is the label at position j and is in the loss exactly when
`attention_mask[j]` (the loss mask) is 1; the first token is never a label. Trailing padding (pad id in
input_ids and labels, loss mask 0) is counted, not shown. The sequence is cut into documents: after each
EOS, or for VSL where `position_ids` restart at 0, each document with its positions and the tokens its
`attention_span` lets it attend to (key k is visible to queries k .. k + attention_span[k]).

Samples are numbered over the data dir's HDF5 sample files in name order (for a split of part
directories, `train_shuffled_msl2048/0/` .. `/9/`, over the parts in order), as `gptx train` reads them
without shuffle. The tokenizer is the one `data_params(DIR)` records (`data/params.py`), or --tokenizer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gptx_cli.data.hdf5 import h5_layout
from gptx_cli.data.params import DataParams, data_params
from gptx_cli.data.tokenizer import load_tokenizer
from gptx_cli.errors import DataError, UsageError

# What a piece of a rendered sample is: in the loss, not in the loss, a document boundary line.
LOSS, MASKED, BOUNDARY = "loss", "masked", "boundary"


@dataclass
class Document:
    """One document of a sample: its tokens as indices of the sample's token sequence."""

    start: int
    end: int  # inclusive
    segments: list[tuple[str, bool]] = field(default_factory=list)  # (text, in the loss)
    positions: tuple[int, int] | None = None  # VSL: position_ids of its first and last input token
    attends: tuple[int, int] | None = None  # VSL: the input positions its first token's span covers

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "tokens": [self.start, self.end],
            "text": "".join(t for t, _ in self.segments),
            "segments": [{"text": t, "loss": loss} for t, loss in self.segments],
        }
        if self.positions is not None:
            out["position_ids"] = list(self.positions)
            out["attention_span"] = list(self.attends or ())
        return out


@dataclass
class SampleView:
    index: int
    file: Path
    row: int
    msl: int
    vsl: bool
    tokens: int  # length of the token sequence shown (input_ids[0] + the real labels)
    loss_tokens: int
    padding: int
    documents: list[Document]

    def to_dict(self) -> dict[str, Any]:
        return {
            "sample": self.index,
            "file": str(self.file),
            "row": self.row,
            "msl": self.msl,
            "vsl": self.vsl,
            "tokens": self.tokens,
            "loss_tokens": self.loss_tokens,
            "padding": self.padding,
            "documents": [d.to_dict() for d in self.documents],
        }

    def pieces(self) -> list[tuple[str, str]]:
        """The sample as (text, kind) pieces, kind LOSS / MASKED / BOUNDARY (a line of its own)."""
        out: list[tuple[str, str]] = []
        for k, doc in enumerate(self.documents, 1):
            what = f"document {k}: tokens {doc.start}-{doc.end}"
            if doc.positions is not None and doc.attends is not None:
                what += (
                    f", position_ids {doc.positions[0]}-{doc.positions[1]}, "
                    f"attends within input positions {doc.attends[0]}-{doc.attends[1]}"
                )
            out.append((f"--- {what} ---", BOUNDARY))
            out += [(text, LOSS if loss else MASKED) for text, loss in doc.segments]
        return out


@dataclass
class Inspection:
    data_dir: Path
    params: DataParams | None
    tokenizer: str
    total: int  # samples in the dir
    samples: list[SampleView]

    def header(self) -> str:
        mode = (self.params.mode if self.params else None) or "unknown mode"
        where = f"{self.params.path}" if self.params else "no data_params.json"
        return f"{self.data_dir}: {self.total:,} samples ({mode}; tokenizer {self.tokenizer}; {where})"


def sample_files(data_dir: Path) -> list[Path]:
    """The HDF5 sample files of a data dir (a file, a dir, or a split's part dirs), in reading order."""
    if not data_dir.exists():
        raise DataError(f"data dir {data_dir} does not exist")
    if data_dir.is_file():
        if data_dir.suffix not in (".h5", ".hdf5"):
            raise DataError(f"{data_dir} is not an HDF5 file (.h5) of preprocessed samples")
        return [data_dir]
    own = [f for f in sorted(data_dir.iterdir()) if f.suffix in (".h5", ".hdf5") and f.is_file()]
    own = [f for f in own if not f.name.startswith(".")]  # temporaries of a preprocess still running
    if own:
        return own
    parts = [p for p in data_dir.iterdir() if p.is_dir() and not p.name.startswith(".")]
    parts.sort(key=lambda p: (0, int(p.name), "") if p.name.isdigit() else (1, 0, p.name))
    found = [f for p in parts for f in sorted(p.glob("*.h5")) if not f.name.startswith(".")]
    if not found:
        streams = sorted(data_dir.glob("*.idx")) + sorted(data_dir.glob("*.bin"))
        what = f" (it holds {streams[0].name}: a token stream, not samples)" if streams else ""
        raise DataError(
            f"{data_dir} holds no HDF5 sample files: not a `gptx preprocess` output{what}",
            hint="point gptx inspect at a directory written by `gptx preprocess --output-format hdf5`",
        )
    return found


def inspect_data(
    data_dir: str | Path, *, sample: int = 0, limit: int = 1, tokenizer: str | None = None
) -> Inspection:
    """Samples `sample` .. `sample + limit - 1` of `data_dir`, decoded and laid out."""
    d = Path(data_dir)
    files = sample_files(d)
    sizes = []
    for f in files:
        kind, n, _ = h5_layout(f)
        if kind != "samples":
            raise DataError(f"{f} is a corpus file (a 1-D token stream), not preprocessed samples")
        sizes.append(n)
    total = sum(sizes)
    if sample < 0 or sample >= total:
        raise UsageError(f"--sample {sample} is out of range: {d} holds {total} samples (0-{total - 1})")
    params = data_params(d)
    spec = tokenizer or (params.tokenizer if params else None)
    if not spec:
        raise UsageError(
            f"{d} records no tokenizer ({params.path if params else 'no data_params.json'})",
            hint="pass --tokenizer (a preset such as gpt2, a tokenizer.json or a directory)",
        )
    tok = load_tokenizer(spec)
    eos = params.eos_id if params and params.eos_id is not None else tok.eos_id
    pad = params.pad_id if params and params.pad_id is not None else tok.pad_id
    views = []
    for index in range(sample, min(sample + limit, total)):
        file_no, row = _locate(sizes, index)
        views.append(_view(index, files[file_no], row, _read_row(files[file_no], row), tok, eos, pad))
    return Inspection(d, params, tok.source or tok.name, total, views)


def _locate(sizes: list[int], index: int) -> tuple[int, int]:
    for i, n in enumerate(sizes):
        if index < n:
            return i, index
        index -= n
    raise IndexError(index)


def _read_row(path: Path, row: int) -> np.ndarray:
    import h5py

    with h5py.File(path, "r") as f:
        return np.asarray(f["data"][row], dtype=np.int64)


def _view(
    index: int, path: Path, row: int, data: np.ndarray, tok: Any, eos: int | None, pad: int | None
) -> SampleView:
    msl = data.shape[1]
    inputs, mask, labels = data[0], data[1], data[2]
    vsl = data.shape[0] == 5
    real = msl  # input positions before the trailing padding
    while real > 0 and mask[real - 1] == 0 and inputs[real - 1] == pad and labels[real - 1] == pad:
        if vsl and (data[3][real - 1] != 0 or data[4][real - 1] != 0):
            break
        real -= 1
    seq = [int(inputs[0])] + [int(x) for x in labels[:real]] if real else [int(inputs[0])]
    loss = [False] + [bool(m) for m in mask[:real]]
    if vsl:
        spans, positions = data[3], data[4]
        starts = [i for i in range(real) if positions[i] == 0] or [0]
        bounds = [(s, e - 1) for s, e in zip(starts, [*starts[1:], len(seq)], strict=True)]
        docs = []
        for s, e in bounds:
            last_input = min(e, real - 1)
            doc = Document(s, e, positions=(int(positions[s]), int(positions[last_input])))
            doc.attends = (s, s + int(spans[s]))
            docs.append(doc)
    else:
        cuts = [i + 1 for i, t in enumerate(seq[:-1]) if eos is not None and t == eos]
        docs = [Document(s, e - 1) for s, e in zip([0, *cuts], [*cuts, len(seq)], strict=True)]
    for doc in docs:
        doc.segments = _segments(tok, seq, loss, doc.start, doc.end)
    return SampleView(index, path, row, msl, vsl, len(seq), int(sum(loss)), msl - real, docs)


def _segments(tok: Any, seq: list[int], loss: list[bool], start: int, end: int) -> list[tuple[str, bool]]:
    """Runs of tokens with the same loss flag, each decoded as one piece (so multi-byte characters stay
    whole inside a run)."""
    out: list[tuple[str, bool]] = []
    i = start
    while i <= end:
        j = i
        while j + 1 <= end and loss[j + 1] == loss[i]:
            j += 1
        out.append((tok.decode(seq[i : j + 1]), loss[i]))
        i = j + 1
    return out
