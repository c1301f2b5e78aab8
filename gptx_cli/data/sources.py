"""Input documents: files (.jsonl, .jsonl.zst, .json.gz, .txt, .parquet), directories, globs, a local
`datasets` save_to_disk directory, a hub dataset name; and the Pile's layout.

Reading is split in two so that parsing can run in worker processes: the main process reads *records*
in order (raw JSON lines as bytes with their line numbers, or ready strings), and `record_texts` turns a
batch of records into texts, reporting malformed lines by file:line. Bad input is reported as
`DataError` naming the file (and line).
"""

from __future__ import annotations

import glob
import io
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gptx_cli.errors import DataError, UsageError

JSONL_SUFFIXES = (".jsonl", ".json", ".jsonl.zst", ".json.zst", ".jsonl.gz", ".json.gz")
TEXT_SUFFIXES = (".txt", ".txt.gz", ".txt.zst")
PARQUET_SUFFIXES = (".parquet",)
ALL_SUFFIXES = JSONL_SUFFIXES + TEXT_SUFFIXES + PARQUET_SUFFIXES
READ_BLOCK = 1 << 20
BATCH_RECORDS = 1024
BATCH_BYTES = 4 << 20

PILE_TRAIN_FILES = tuple(f"train/{i:02d}.jsonl.zst" for i in range(30))


@dataclass(frozen=True)
class InputUnit:
    """One unit of work (and of resume): a file, a `datasets` directory, or a hub dataset."""

    kind: str  # "jsonl" | "text" | "parquet" | "datasets" | "hub"
    location: str
    split: str | None = None

    @property
    def size(self) -> int:
        try:
            return os.path.getsize(self.location) if self.kind not in ("datasets", "hub") else 0
        except OSError:
            return 0


@dataclass
class RecordBatch:
    """Records of one unit: raw JSON lines (bytes) with the line number of the first, or texts (str)."""

    unit_index: int
    first_line: int
    records: list[Any]
    raw_bytes: int = 0
    consumed: int = 0  # compressed input bytes consumed so far (progress)


@dataclass
class TextBatch:
    texts: list[str]
    problems: list[str] = field(default_factory=list)  # "file:line: what", skipped records
    filtered: int = 0  # records left out by a subset filter
    empty: int = 0  # records whose text was empty


def _kind_of(path: Path) -> str | None:
    name = path.name.lower()
    if name.endswith(JSONL_SUFFIXES):
        return "jsonl"
    if name.endswith(TEXT_SUFFIXES):
        return "text"
    if name.endswith(PARQUET_SUFFIXES):
        return "parquet"
    return None


def _is_datasets_dir(p: Path) -> bool:
    return (
        (p / "dataset_info.json").is_file()
        or (p / "dataset_dict.json").is_file()
        or (p / "state.json").is_file()
    )


def expand_inputs(inputs: list[str], *, split: str = "train") -> list[InputUnit]:
    """Files, directories (searched recursively, sorted), globs, datasets dirs and hub names -> units."""
    units: list[InputUnit] = []
    for spec in inputs:
        p = Path(spec).expanduser()
        if p.is_dir():
            if _is_datasets_dir(p):
                units.append(InputUnit("datasets", str(p), split))
                continue
            files = sorted(
                f for f in p.rglob("*") if f.is_file() and _kind_of(f) and not f.name.startswith(".")
            )
            if not files:
                raise DataError(f"input directory {p} holds no {', '.join(ALL_SUFFIXES)} files")
            units.extend(InputUnit(_kind_of(f) or "", str(f)) for f in files)
        elif p.is_file():
            kind = _kind_of(p)
            if kind is None:
                raise UsageError(
                    f"input {p}: unsupported file type (expected one of {', '.join(ALL_SUFFIXES)})"
                )
            units.append(InputUnit(kind, str(p)))
        elif glob.has_magic(spec):
            matches = sorted(Path(m) for m in glob.glob(os.path.expanduser(spec), recursive=True))
            files = [m for m in matches if m.is_file() and _kind_of(m)]
            if not files:
                raise DataError(f"input pattern '{spec}' matches no {', '.join(ALL_SUFFIXES)} files")
            units.extend(InputUnit(_kind_of(f) or "", str(f)) for f in files)
        elif (
            spec.startswith((".", "/", "~")) or spec.lower().endswith(ALL_SUFFIXES) or os.sep + os.sep in spec
        ):
            raise DataError(f"input {spec} does not exist")
        else:
            units.append(InputUnit("hub", spec, split))  # e.g. "wikitext" or "org/name"
    if not units:
        raise DataError(
            "no input given", hint="pass --input FILE_OR_DIR (repeatable) or --dataset pile --input-dir DIR"
        )
    return units


def pile_units(input_dir: str | os.PathLike[str], split: str) -> list[InputUnit]:
    """The Pile's files for `split` ('train' = train/00..29.jsonl.zst, 'val', 'test'); missing -> DataError."""
    root = Path(input_dir)
    if split == "train":
        files = [root / f for f in PILE_TRAIN_FILES if (root / f).is_file()]
        if not files:
            raise DataError(
                f"Pile input {root}: no train/00.jsonl.zst ... train/29.jsonl.zst",
                hint="--input-dir must hold the Pile's train/, val.jsonl.zst and test.jsonl.zst",
            )
    else:
        f = root / f"{split}.jsonl.zst"
        if not f.is_file():
            raise DataError(f"Pile input {root}: no {split}.jsonl.zst")
        files = [f]
    return [InputUnit("jsonl", str(f)) for f in files]


# ----------------------------------------------------------------------------------------- raw reading


class _Counted(io.RawIOBase):
    """Counts the compressed bytes read, for progress."""

    def __init__(self, f: Any) -> None:
        self.f, self.n = f, 0

    def readinto(self, b: Any) -> int:
        n = self.f.readinto(b)
        self.n += n or 0
        return n

    def readable(self) -> bool:
        return True


def _zst_blocks(raw: _Counted, path: str) -> Iterator[bytes]:
    """Decompressed blocks of a (multi-frame) .zst file; a truncated last frame is a DataError."""
    import zstandard

    dobj = zstandard.ZstdDecompressor().decompressobj()
    fed = False
    while True:
        chunk = raw.read(READ_BLOCK)
        if not chunk:
            break
        while chunk:
            fed = True
            try:
                out = dobj.decompress(chunk)
            except zstandard.ZstdError as err:
                raise DataError(f"{path}: corrupt zstd data ({err})") from None
            if out:
                yield out
            if dobj.eof:
                chunk, dobj, fed = dobj.unused_data, zstandard.ZstdDecompressor().decompressobj(), False
            else:
                chunk = b""
    if fed:
        raise DataError(f"{path}: truncated .zst file (the last zstd frame is incomplete)")


def _blocks(path: str, raw: _Counted) -> Iterator[bytes]:
    name = path.lower()
    if name.endswith(".zst"):
        yield from _zst_blocks(raw, path)
        return
    if name.endswith(".gz"):
        import gzip

        g = gzip.GzipFile(fileobj=io.BufferedReader(raw, READ_BLOCK), mode="rb")
        try:
            while block := g.read(READ_BLOCK):
                yield block
        except (EOFError, OSError) as err:
            raise DataError(f"{path}: truncated or corrupt gzip file ({err})") from None
        return
    while block := raw.read(READ_BLOCK):
        yield block


def iter_record_batches(
    unit: InputUnit, unit_index: int, *, text_key: str, columns: list[str] | None = None
) -> Iterator[RecordBatch]:
    """The records of one unit in order, in batches (see module docstring). With `columns`, parquet and
    `datasets` records are dicts of those columns (finetuning) instead of the text column's strings."""
    if unit.kind in ("jsonl", "text"):
        with open(unit.location, "rb") as fh:
            raw = _Counted(fh)
            if unit.kind == "text":
                data = b"".join(_blocks(unit.location, raw))
                yield RecordBatch(unit_index, 1, [data], len(data), raw.n)
                return
            line_no, first, pending, size = 1, 1, [], 0
            tail = b""
            for block in _blocks(unit.location, raw):
                lines = (tail + block).split(b"\n")
                tail = lines.pop()
                for line in lines:
                    pending.append(line)
                    size += len(line) + 1
                    line_no += 1
                    if len(pending) >= BATCH_RECORDS or size >= BATCH_BYTES:
                        yield RecordBatch(unit_index, first, pending, size, raw.n)
                        first, pending, size = line_no, [], 0
            if tail:
                pending.append(tail)
                size += len(tail)
            if pending:
                yield RecordBatch(unit_index, first, pending, size, raw.n)
        return
    if unit.kind == "parquet":
        import pyarrow.parquet as pq

        try:
            pf = pq.ParquetFile(unit.location)
        except Exception as err:  # pyarrow raises several types for a bad file
            raise DataError(f"{unit.location}: not a readable parquet file ({err})") from None
        for key in columns or [text_key]:
            if key not in pf.schema_arrow.names:
                raise DataError(
                    f"{unit.location}: no column '{key}' (columns: {', '.join(pf.schema_arrow.names)})",
                    hint="choose one with --text-key" if columns is None else None,
                )
        row = 1
        for rb in pf.iter_batches(batch_size=BATCH_RECORDS, columns=columns or [text_key]):
            texts = rb.to_pylist() if columns else rb.column(0).to_pylist()
            yield RecordBatch(
                unit_index, row, texts, rb.nbytes if columns else sum(len(t or "") for t in texts)
            )
            row += len(texts)
        return
    yield from _datasets_batches(unit, unit_index, text_key=text_key, columns=columns)


def _datasets_batches(
    unit: InputUnit, unit_index: int, *, text_key: str, columns: list[str] | None = None
) -> Iterator[RecordBatch]:
    import datasets

    if unit.kind == "datasets":
        ds: Any = datasets.load_from_disk(unit.location)
        if isinstance(ds, datasets.DatasetDict):
            if unit.split not in ds:
                raise DataError(f"{unit.location}: no split '{unit.split}' (splits: {', '.join(ds)})")
            ds = ds[unit.split]
    else:
        if os.environ.get("HF_DATASETS_OFFLINE") == "1" or os.environ.get("HF_HUB_OFFLINE") == "1":
            raise DataError(
                f"'{unit.location}' is not a local file or directory, and the hub is offline "
                "(HF_HUB_OFFLINE / HF_DATASETS_OFFLINE)",
                hint="pass local files, or a directory written by datasets' save_to_disk",
            )
        try:
            ds = datasets.load_dataset(unit.location, split=unit.split, streaming=True)
        except Exception as err:  # network / hub errors come in many types
            raise DataError(
                f"'{unit.location}' is not a local file or directory, and loading it from the hub failed "
                f"({type(err).__name__})",
                hint="check the name and your connection, or pass local files",
            ) from None
    names = list(ds.column_names or []) if getattr(ds, "column_names", None) else []
    for key in columns or [text_key]:
        if names and key not in names:
            raise DataError(
                f"{unit.location}: no column '{key}' (columns: {', '.join(names)})",
                hint="choose one with --text-key" if columns is None else None,
            )
    row, pending = 1, []
    for ex in ds if unit.kind == "hub" else ds.select_columns(columns or [text_key]):
        pending.append({k: ex[k] for k in columns} if columns else ex[text_key])
        if len(pending) >= BATCH_RECORDS:
            yield RecordBatch(unit_index, row, pending, sum(len(t or "") for t in pending))
            row, pending = row + len(pending), []
    if pending:
        yield RecordBatch(unit_index, row, pending, sum(len(t or "") for t in pending))


# ------------------------------------------------------------------------------------------ parsing


def record_texts(
    kind: str, location: str, batch: RecordBatch, *, text_key: str, subsets: frozenset[str] | None
) -> TextBatch:
    """Texts of a batch, in order. Malformed lines are listed in `problems` and skipped; a record
    without the text key is a DataError (almost always the wrong --text-key)."""
    out = TextBatch([])
    for offset, rec in enumerate(batch.records):
        line = batch.first_line + offset
        if kind == "jsonl":
            if not rec.strip():
                continue  # blank lines (e.g. a trailing newline) are not documents
            try:
                obj = json.loads(rec.decode("utf-8"))
            except UnicodeDecodeError as err:
                out.problems.append(f"{location}:{line}: not valid UTF-8 (byte {err.start} of the line)")
                continue
            except json.JSONDecodeError as err:
                out.problems.append(f"{location}:{line}: malformed JSON ({err.msg} at column {err.colno})")
                continue
            if not isinstance(obj, dict) or text_key not in obj:
                keys = ", ".join(obj) if isinstance(obj, dict) else type(obj).__name__
                raise DataError(
                    f"{location}:{line}: no key '{text_key}' in the record (has: {keys})",
                    hint="choose the text field with --text-key",
                )
            if subsets is not None:
                meta = obj.get("meta") or {}
                if not isinstance(meta, dict) or meta.get("pile_set_name") not in subsets:
                    out.filtered += 1
                    continue
            text = obj[text_key]
            if not isinstance(text, str):
                out.problems.append(f"{location}:{line}: '{text_key}' is {type(text).__name__}, not a string")
                continue
        elif kind == "text":
            try:
                text = rec.decode("utf-8")
            except UnicodeDecodeError as err:
                out.problems.append(f"{location}: not valid UTF-8 (byte {err.start}); file skipped")
                continue
        else:
            text = rec
            if text is None:
                out.empty += 1
                continue
        if not text:
            out.empty += 1
            continue
        out.texts.append(text)
    return out
