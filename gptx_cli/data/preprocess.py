"""`gptx preprocess`: documents -> tokens -> ModelZoo HDF5 samples (or corpus files, or .bin/.idx).

Work is cut into *units* (consecutive input files of about `shard_mb` MB; a big file is a unit of its
own). Within a unit the main process reads records in order, `processes` workers parse and tokenise
batches of them, and the main process packs the results in input order, so the output depends only on
the input and the arguments, never on the number of workers. Each unit writes its own files
(`data-<unit>-<k>.h5`, via a temporary name) and, once complete, a small state file; `--resume` keeps
completed units and redoes the rest, so no document is lost or written twice.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import signal
import sys
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from gptx_cli.data.finetune import ChatNotes
from gptx_cli.data.pack import ModelZooV2Packer, Packer, SampleStats, append_eos, concat_documents
from gptx_cli.data.sources import (
    BATCH_RECORDS,
    InputUnit,
    RecordBatch,
    expand_inputs,
    iter_record_batches,
    pile_units,
    record_texts,
)
from gptx_cli.data.textclean import TextCleaning, TextCounts
from gptx_cli.errors import DataError, UsageError
from gptx_cli.fsutil import atomic_path, host_available_bytes, host_cores, is_temp, write_json

STATE_DIR = ".gptx-preprocess"
MIN_TRAINED_VOCAB = 258  # the byte alphabet plus the two special tokens
PILE_PARTS = 10
OUTPUT_FORMATS = ("hdf5", "corpus", "mmidx")
MAX_PROBLEMS_SHOWN = 5  # skipped records named (file:line: why); then a count
# The built-in corpus (gptx_cli.data.builtin_corpus): real text on every machine, for the demo.
PYTHON_DOCS = "python-docs"
DEFAULT_PYTHON_DOCS_DIR = "./language/datasets/python_docs/hdf5_dataset"
TRC2 = "trc2"  # ModelZoo's TRC2 recipe (gptx_cli/data/trc2.py)


def python_docs_sources() -> dict[str, Path]:
    """train/val JSON-lines files of the Python standard library's documentation (built once, cached)."""
    from gptx_cli.data.builtin_corpus import default_cache_dir, write_stdlib_corpus

    return write_stdlib_corpus(default_cache_dir())


@dataclass
class PreprocessOptions:
    inputs: list[str] = field(default_factory=list)
    output_dir: str | None = None
    dataset: str | None = None  # "pile", "python-docs" or None (generic)
    input_dir: str | None = None
    pile_splits: list[str] = field(default_factory=lambda: ["train", "val"])
    pile_subsets: list[str] | None = None
    tokenizer: str = "gpt2"
    tokenizer_dir: str | None = None
    tokenizer_backend: str = "auto"
    train_tokenizer: int | None = None
    text_key: str = "text"
    split: str = "train"
    max_seq_length: int = 2048
    pack_sequences: bool = True
    min_sequence_len: int = 10
    output_format: str = "hdf5"
    samples_per_file: int = 5000  # ~120 MB per file before compression at msl 2048
    processes: int = 1
    seed: int = 0
    shard_mb: float = 256.0
    strict: bool = False
    resume: bool = False
    overwrite: bool = False
    progress: bool | None = None  # None: a live bar on a terminal, log lines otherwise
    use_vsl: bool = False  # ModelZoo VSL samples [n, 5, msl] (gptx_cli.data.vsl)
    read_chunk_size: int = 1024  # KiB: ModelZoo's read chunks, within which VSL packs (gptx_cli.data.vsl)
    mode: str = "pretraining"  # or "finetuning" (gptx_cli.data.finetune; use_vsl packs its examples)
    finetuning: Any = None  # a finetune.FinetuneSpec in finetuning mode
    # ModelZoo v2 config settings (gptx_cli/data/v2config.py):
    cleaning: TextCleaning = field(default_factory=TextCleaning)  # strip / ftfy / wikitext, per document
    short_seq_prob: float = 0.0  # ModelZoo: cut a sample short with this probability (random.Random(seed))
    eos_id: int | None = None  # override the tokenizer's EOS / PAD ids
    pad_id: int | None = None
    shuffle: bool = False  # ModelZoo's two-pass shuffle of the written samples (data/shuffle.py)
    shuffle_seed: int = 0
    # "gptx": EOS after every document, msl+1 windows at stride msl (ModelZoo's create_hdf5_dataset);
    # "modelzoo-v2": v2 PretrainingTokenGenerator's chunks at stride msl+1 and its EOS rule (pack.py).
    packing: str = "gptx"
    # --dataset trc2: split_trc_dataset.py's --buffer_len and --val_split_ratio.
    buffer_len: int = 10_000
    val_split_ratio: float = 0.1
    # ModelZoo v2 (preprocess_data.py) reader: a text record larger than read_chunk_size KiB is cut into
    # documents at paragraph / sentence ends (textclean.split_by_read_chunk_size); False: kept whole, as
    # create_hdf5_dataset.py (the --input path) does. v2 pretraining configs: True unless
    # processing.gptx_keep_whole_documents.
    cut_records: bool = False
    # ModelZoo's find_token_range bug (finetune.find_token_range): False reproduces it (v2 pretraining,
    # finetuning), True keeps every token of a document's / region's last character.
    keep_whole_last_character: bool = False
    # A v2 YAML's setup / processing / dataset sections as written (v2config.run_v2): data_params.json
    # holds ModelZoo's copy of them (data_preprocessor.py: dump_args); None for command-line runs.
    modelzoo_params: dict[str, Any] | None = None


@dataclass
class Job:
    """One output directory: its units, and whether samples are spread over shuffled parts."""

    name: str
    units: list[list[InputUnit]]
    out_dir: Path
    parts: int = 1


@dataclass
class JobStats:
    samples: SampleStats = field(default_factory=SampleStats)
    documents: int = 0  # documents tokenised
    documents_skipped: int = 0  # malformed records
    documents_filtered: int = 0  # not in the chosen Pile subsets
    documents_empty: int = 0
    input_bytes: int = 0  # bytes of the input files read
    # ModelZoo's text sizes (textclean.TextCounts): after the read hook (raw) and after ftfy (normalized)
    raw_bytes_count: int = 0
    raw_chars_count: int = 0
    normalized_bytes_count: int = 0
    normalized_chars_count: int = 0
    input_files: int = 0
    examples_too_long: int = 0  # finetuning: examples dropped for length (ModelZoo discards them)
    examples_too_short: int = 0
    num_masked_tokens: int = 0  # max_seq_length - loss_valid_tokens, summed over the samples
    # ModelZoo's get_data_stats on the written samples' input_ids (pretraining, HDF5): pad_id positions
    # (EOS too where pad_id = eos_id) and positions neither pad nor EOS
    sample_pad_tokens: int = 0
    sample_non_pad_tokens: int = 0
    documents_without_sample: int = 0  # pretraining: documents none of whose chunks gave a sample
    # Written only when not 0 (the records of runs these never apply to stay as they were):
    endings_cut: int = 0  # documents / examples ModelZoo's find_token_range changed (reproduced)
    records_split: int = 0  # records larger than read_chunk_size, cut into documents
    split_documents: int = 0  # the documents they were cut into

    def add(self, other: JobStats) -> None:
        self.samples.add(other.samples)
        for k in self.__dataclass_fields__:
            if k != "samples":
                setattr(self, k, getattr(self, k) + getattr(other, k))

    def to_dict(self) -> dict[str, Any]:
        """Every count, flat (a unit's state file; `from_dict` reads it back)."""
        return {**asdict(self.samples), **{k: v for k, v in asdict(self).items() if k != "samples"}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> JobStats:
        s = SampleStats(**{k: d.get(k, 0) for k in SampleStats.__dataclass_fields__})
        return cls(samples=s, **{k: d.get(k, 0) for k in cls.__dataclass_fields__ if k != "samples"})

    def modelzoo_post_process(self, mode: str, counted_samples: bool) -> dict[str, Any]:
        """data_params.json's `post-process`: the keys ModelZoo 2.10 writes there, with its definitions
        (data_preprocessor.py: stats_keys; utils.py: get_data_stats, dump_result; pretraining_token_generator.py:
        process_docs, parse_semantic_data_array; finetuning_token_generator.py: _encode).
        `counted_samples`: the pretraining samples were counted as written (`_run_unit`: emit)."""
        s = self.samples
        if mode == "finetuning":
            # one ModelZoo "file" per record; the dropped examples are its discarded ones
            discarded = self.examples_too_long + self.examples_too_short
            processed = self.documents
            pad, non_pad = s.num_pad_tokens, s.non_pad_tokens
            extra: dict[str, Any] = {
                "total_raw_docs": self.documents + self.documents_skipped,
                "raw_docs_skipped": self.documents_skipped,
            }
        else:
            # one "file" per non-empty document; discarded when none of its chunks gave a sample
            discarded = self.documents_without_sample
            processed = self.documents
            sampled = counted_samples
            pad = self.sample_pad_tokens if sampled else s.num_pad_tokens
            non_pad = self.sample_non_pad_tokens if sampled else s.non_pad_tokens
            extra = {}
        n = s.n_examples
        post = {
            "n_examples": n,
            "num_tokens": s.num_tokens,
            "loss_valid_tokens": s.loss_valid_tokens,
            "num_pad_tokens": pad,
            "non_pad_tokens": non_pad,
            "num_masked_tokens": self.num_masked_tokens,
            "processed_files": processed,
            "successful_files": processed - discarded,
            "discarded_files": discarded,
            "raw_bytes_count": self.raw_bytes_count,
            "raw_chars_count": self.raw_chars_count,
            "normalized_bytes_count": self.normalized_bytes_count,
            "normalized_chars_count": self.normalized_chars_count,
            # utils.py: dump_result
            "average_bytes_per_sequence": -(-self.raw_bytes_count // n) if n else 0,
            "average_chars_per_sequence": -(-self.raw_chars_count // n) if n else 0,
            **extra,
        }
        return post

    def gptx_post_process(self) -> dict[str, Any]:
        """The figures only gptx writes (data_params.json: gptx.post-process)."""
        d = {
            "documents": self.documents,
            "documents_skipped": self.documents_skipped,
            "documents_filtered": self.documents_filtered,
            "documents_empty": self.documents_empty,
            "input_files": self.input_files,
            "input_bytes": self.input_bytes,
            "document_tokens": self.samples.document_tokens,
            "dropped_tokens": self.samples.dropped_tokens,
            "examples_too_long": self.examples_too_long,
            "examples_too_short": self.examples_too_short,
        }
        return d | {k: getattr(self, k) for k in _IF_SET if getattr(self, k)}


_IF_SET = ("endings_cut", "records_split", "split_documents")


# --------------------------------------------------------------------------------------------- workers

_WORKER: dict[str, Any] = {}


def _init_worker(
    tokenizer: str, tokenizer_dir: str | None, backend: str, ids: tuple[int | None, int | None] = (None, None)
) -> None:
    os.environ["RAYON_NUM_THREADS"] = "1"  # one core per worker process
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process handles Ctrl-C
    from gptx_cli.data.tokenizer import load_tokenizer

    _WORKER["tok"] = _with_ids(load_tokenizer(tokenizer, tokenizer_dir=tokenizer_dir, backend=backend), *ids)


def _with_ids(tok: Any, eos_id: int | None, pad_id: int | None) -> Any:
    """The tokenizer with ModelZoo's `eos_id` / `pad_id` overrides (a copy: loaded tokenizers are cached)."""
    if eos_id is None and pad_id is None:
        return tok
    import copy

    tok = copy.copy(tok)
    if eos_id is not None:
        tok.eos_id = eos_id
    if pad_id is not None:
        tok.pad_id = pad_id
    return tok


@dataclass
class EncodedBatch:
    tokens: np.ndarray
    lengths: np.ndarray
    problems: list[str]
    filtered: int
    empty: int
    error: tuple[str, str | None] | None = None
    endings_cut: int = 0  # documents whose last character lost trailing tokens (ModelZoo's find_token_range)
    records_split: int = 0  # records cut at read_chunk_size, into split_documents documents
    split_documents: int = 0
    text: TextCounts = field(default_factory=TextCounts)
    sizes: np.ndarray | None = None  # VSL: each document's text in UTF-8 bytes as read (data/vsl.py)


def _encode_finetune(
    kind: str,
    location: str,
    batch: RecordBatch,
    spec: Any,
    msl: int,
    min_len: int,
    pack: bool,
    keep_whole_last_character: bool = False,
) -> Any:
    from gptx_cli.data.finetune import FinetuneBatch, encode_batch

    try:
        return encode_batch(
            _WORKER["tok"], kind, location, batch, spec, msl, min_len, pack, keep_whole_last_character
        )
    except DataError as err:
        return FinetuneBatch(np.zeros((0, 3, msl), np.int32), error=(err.message, err.hint))


def _encode_batch(
    kind: str,
    location: str,
    batch: RecordBatch,
    text_key: str,
    subsets: Any,
    cleaning: TextCleaning | None = None,
    add_eos: bool = True,
    cut_endings: bool = False,
    chunk_bytes: int | None = None,
    sized: bool = False,
) -> EncodedBatch:
    """`cut_endings`: drop what ModelZoo v2's find_token_range drops at a document's end;
    `chunk_bytes`: cut records larger than this as ModelZoo v2's reader does (read_chunk_size)."""
    tok = _WORKER["tok"]
    try:
        tb = record_texts(kind, location, batch, text_key=text_key, subsets=subsets)
    except DataError as err:
        empty = np.zeros(0, dtype=np.int32)
        return EncodedBatch(empty, np.zeros(0, np.int64), [], 0, 0, error=(err.message, err.hint))
    split = (0, 0)
    sizes: list[int] | None = [] if sized else None
    if cleaning is not None and cleaning.active:
        tb.texts, emptied, split, counts = cleaning.apply(tb.texts, kind, chunk_bytes, sizes)
        tb.empty += emptied
    else:
        counts = TextCounts.of(tb.texts)
        if sizes is not None:
            sizes = [len(t.encode("utf-8")) for t in tb.texts]
    docs = tok.encode_batch_arrays(tb.texts)
    cut = 0
    if cut_endings:
        from gptx_cli.data.finetune import trailing_tokens_cut

        for i, text in enumerate(tb.texts):
            k = trailing_tokens_cut(text, tok.hf)
            if k:
                docs[i], cut = docs[i][:-k], cut + 1
    if add_eos:
        tokens, lengths = append_eos(docs, tok.eos_id)
    else:  # the ModelZoo v2 packer places EOS itself
        tokens, lengths = concat_documents(docs)
    out = EncodedBatch(tokens, lengths, tb.problems, tb.filtered, tb.empty, None, cut, *split, counts)
    if sizes is not None:
        out.sizes = np.array(sizes, dtype=np.int64)
    return out


# ---------------------------------------------------------------------------------------------- output


class _SampleWriter:
    """HDF5 sample files of one unit, spread over `parts` sub-directories with a seeded shuffle."""

    def __init__(self, job: Job, unit: int, samples_per_file: int, seed: int) -> None:
        self.job, self.unit, self.per_file = job, unit, samples_per_file
        self.rng = np.random.default_rng([seed, unit]) if job.parts > 1 else None
        self.buffers: list[list[np.ndarray]] = [[] for _ in range(job.parts)]
        self.counts = [0] * job.parts
        self.files_written = [0] * job.parts

    def _dir(self, part: int) -> Path:
        return self.job.out_dir / str(part) if self.job.parts > 1 else self.job.out_dir

    def add(self, samples: np.ndarray) -> None:
        if not len(samples):
            return
        if self.rng is None:
            self._append(0, samples)
            return
        where = self.rng.integers(self.job.parts, size=len(samples))
        for p in range(self.job.parts):
            sel = samples[where == p]
            if len(sel):
                self._append(p, sel)

    def _append(self, part: int, samples: np.ndarray) -> None:
        self.buffers[part].append(samples)
        self.counts[part] += len(samples)
        while self.counts[part] >= self.per_file:
            self._flush(part, self.per_file)

    def _flush(self, part: int, n: int) -> None:
        from gptx_cli.data.hdf5 import write_sample_file

        allrows = np.concatenate(self.buffers[part])
        rows, rest = allrows[:n], allrows[n:]
        if self.rng is not None:
            rows = rows[self.rng.permutation(len(rows))]
        d = self._dir(part)
        d.mkdir(parents=True, exist_ok=True)
        write_sample_file(d / f"data-{self.unit:05d}-{self.files_written[part]:04d}.h5", rows)
        self.files_written[part] += 1
        self.buffers[part], self.counts[part] = ([rest] if len(rest) else []), len(rest)

    def close(self) -> None:
        for p in range(self.job.parts):
            if self.counts[p]:
                self._flush(p, self.counts[p])


class _CorpusWriter:
    """ModelZoo corpus files (1-D token streams) of one unit, `tokens_per_file` tokens each at most."""

    def __init__(self, job: Job, unit: int, tokens_per_file: int) -> None:
        self.job, self.unit, self.per_file = job, unit, tokens_per_file
        self.buf: list[np.ndarray] = []
        self.docs, self.count, self.k = 0, 0, 0

    def add_documents(self, tokens: np.ndarray, lengths: np.ndarray) -> None:
        self.buf.append(tokens)
        self.count += len(tokens)
        self.docs += len(lengths)
        if self.count >= self.per_file:
            self._flush()

    def _flush(self) -> None:
        from gptx_cli.data.hdf5 import write_corpus_file

        if not self.count:
            return
        self.job.out_dir.mkdir(parents=True, exist_ok=True)
        write_corpus_file(
            self.job.out_dir / f"data-{self.unit:05d}-{self.k:04d}.h5", np.concatenate(self.buf), self.docs
        )
        self.k, self.buf, self.count, self.docs = self.k + 1, [], 0, 0

    def close(self) -> None:
        self._flush()


def _unit_files(out_dir: Path, unit: int) -> list[Path]:
    pattern = f"data-{unit:05d}*"
    return sorted([*out_dir.glob(pattern), *out_dir.glob(f"*/{pattern}")])


# -------------------------------------------------------------------------------------------- progress


class _Progress:
    """A rich live bar on a terminal; plain log lines (every few seconds) otherwise."""

    def __init__(self, total_bytes: int, enabled: bool | None) -> None:
        self.total = total_bytes
        self.live = sys.stderr.isatty() if enabled is None else enabled
        self.t0 = time.monotonic()
        self.last_log = self.t0
        self.done_bytes = 0
        self.docs = 0
        self.tokens = 0
        self.bar: Any = None
        if self.live:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                TextColumn("{task.percentage:>5.1f}%"),
                TextColumn("{task.fields[rates]}"),
                TimeRemainingColumn(),
                transient=False,
                console=Console(stderr=True),
            )
            self.task = self.bar.add_task("preprocess", total=max(total_bytes, 1), rates="")
            self.bar.start()

    def _rates(self) -> str:
        dt = max(time.monotonic() - self.t0, 1e-6)
        return (
            f"{self.docs / dt:,.0f} docs/s  {self.tokens / dt / 1e6:,.2f}M tok/s  "
            f"{self.done_bytes / dt / 1e6:,.1f} MB/s read"
        )

    def update(self, name: str, done_bytes: int, docs: int, tokens: int) -> None:
        self.done_bytes, self.docs, self.tokens = done_bytes, self.docs + docs, self.tokens + tokens
        if self.bar is not None:
            self.bar.update(self.task, completed=done_bytes, description=name, rates=self._rates())
            return
        now = time.monotonic()
        if now - self.last_log >= 5.0:
            self.last_log = now
            pct = 100.0 * done_bytes / self.total if self.total else 0.0
            eta = (now - self.t0) * (self.total - done_bytes) / done_bytes if done_bytes else float("nan")
            print(
                f"preprocess: {name}: {pct:.1f}%  {self.docs:,} docs  {self._rates()}  ETA {eta:,.0f}s",
                file=sys.stderr,
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


# ------------------------------------------------------------------------------------------------ jobs


def _group_units(units: list[InputUnit], shard_mb: float) -> list[list[InputUnit]]:
    limit = max(1, int(shard_mb * 1e6))
    groups: list[list[InputUnit]] = []
    size = 0
    for u in units:
        if (
            groups
            and size + u.size <= limit
            and groups[-1][-1].kind not in ("datasets", "hub")
            and u.kind not in ("datasets", "hub")
        ):
            groups[-1].append(u)
            size += u.size
        else:
            groups.append([u])
            size = u.size
    return groups


def pile_output_dirs(base: Path, msl: int, neox: bool) -> dict[str, Path]:
    """Where the published configs read the Pile (`train` holds parts 0..9)."""
    if neox:
        return {
            "train": base / f"train_neox_msl{msl}",
            "val": base / f"val_neox_msl{msl}",
            "test": base / f"test_neox_msl{msl}",
        }
    return {
        "train": base / f"train_shuffled_msl{msl}",
        "val": base / f"val_msl{msl}",
        "test": base / f"test_msl{msl}",
    }


def default_pile_base(neox: bool) -> Path:
    if neox:
        return Path("./shuffled/language/datasets/pile_original/hdf5_dataset")
    return Path("./language/datasets/pile_original/hdf5_dataset")


def _is_neox(tok: Any) -> bool:
    return "neox" in tok.name.lower() or (tok.eos_id == 0 and tok.pad_id == 1)


def check_job_options(opts: PreprocessOptions) -> None:
    """The usage errors of the job plan, raised before a tokenizer is loaded (an offline hub preset
    takes seconds of retries to fail)."""
    if opts.dataset == "pile" and not opts.input_dir:
        raise UsageError(
            "--dataset pile needs --input-dir (the directory holding train/, val.jsonl.zst, ...)"
        )
    if opts.dataset not in (None, "pile", PYTHON_DOCS, TRC2):
        raise UsageError(
            f"unknown --dataset '{opts.dataset}' (known: pile, {PYTHON_DOCS}, {TRC2}; use --input for other corpora)"
        )
    if opts.dataset is None and not opts.output_dir:
        raise UsageError(
            "--output-dir is required (except with --dataset pile, which knows the published paths)"
        )


def plan_jobs(opts: PreprocessOptions, tok: Any) -> list[Job]:
    check_job_options(opts)
    if opts.dataset == "pile":
        assert opts.input_dir is not None  # check_job_options
        neox = _is_neox(tok)
        base = Path(opts.output_dir) if opts.output_dir else default_pile_base(neox)
        dirs = pile_output_dirs(base, opts.max_seq_length, neox)
        jobs = []
        for split in opts.pile_splits:
            if split not in dirs:
                raise UsageError(f"unknown Pile split '{split}' (choose from train, val, test)")
            parts = PILE_PARTS if split == "train" and opts.output_format == "hdf5" else 1
            groups = [[u] for u in pile_units(opts.input_dir, split)]
            jobs.append(Job(split, groups, dirs[split], parts))
        return jobs
    if opts.dataset == PYTHON_DOCS:
        base = Path(opts.output_dir or DEFAULT_PYTHON_DOCS_DIR)
        sources = python_docs_sources()
        return [
            Job(split, _group_units(expand_inputs([str(sources[split])]), opts.shard_mb), base / split)
            for split in ("train", "val")
        ]
    if opts.dataset == TRC2:
        return _trc2_jobs(opts)
    assert opts.output_dir  # check_job_options
    units = expand_inputs(opts.inputs, split=opts.split)
    return [Job("data", _group_units(units, opts.shard_mb), Path(opts.output_dir))]


def recipe_defaults(dataset: str | None) -> dict[str, Any]:
    """PreprocessOptions values a recipe sets unless the command line gives them."""
    if dataset == TRC2:
        from gptx_cli.data import trc2

        # create_hdf5_dataset.py --ftfy (NFC); msl 512 = params_gptj_6B_TRC2.yaml's max_position_embeddings.
        return {
            "max_seq_length": trc2.DEFAULT_MSL,
            "cleaning": TextCleaning(use_ftfy=True),
            "tokenizer": "gpt2",
        }
    return {}


def _trc2_jobs(opts: PreprocessOptions) -> list[Job]:
    from gptx_cli.data import trc2

    source = trc2.resolve_input(opts.inputs)
    base = Path(opts.output_dir or trc2.DEFAULT_BASE)
    split = trc2.split_trc2(source, base / "split_files", opts.buffer_len, opts.val_split_ratio)
    if split.left_out:
        print(
            f"note: {split.left_out:,} of {split.lines:,} lines left out, as ModelZoo's split_trc_dataset.py "
            f"never writes its final chunk of (at most) {opts.buffer_len:,} lines",
            file=sys.stderr,
        )
    for name, files in (("train", split.train), ("eval", split.eval)):
        if not files:
            raise DataError(
                f"TRC2 input {source}: {split.lines:,} lines give no {name} file "
                f"({opts.buffer_len:,} lines per file, the last {opts.val_split_ratio:.0%} of files to eval)",
                hint="a smaller --buffer-len gives more files",
            )
    return [
        Job(name, _group_units([InputUnit("text", str(f)) for f in files], opts.shard_mb), base / name)
        for name, files in (("train", split.train), ("eval", split.eval))
    ]


def _args_fingerprint(opts: PreprocessOptions, tok: Any, job: Job) -> dict[str, Any]:
    return {
        "inputs": [[u.location for u in g] for g in job.units],
        "tokenizer": tok.describe() | {"backend": None},  # both engines give the same ids
        "text_key": opts.text_key,
        "max_seq_length": opts.max_seq_length,
        "pack_sequences": opts.pack_sequences,
        "min_sequence_len": opts.min_sequence_len,
        "output_format": opts.output_format,
        "samples_per_file": opts.samples_per_file,
        "seed": opts.seed,
        "parts": job.parts,
        "pile_subsets": sorted(opts.pile_subsets) if opts.pile_subsets else None,
        "mode": opts.mode,
        "finetuning": opts.finetuning.to_dict() if opts.finetuning is not None else None,
        **_modelzoo_settings(opts),
    } | ({"use_vsl": True, "read_chunk_size": opts.read_chunk_size} if opts.use_vsl else {})


def _modelzoo_settings(opts: PreprocessOptions) -> dict[str, Any]:
    """The ModelZoo v2 settings that change the output (recorded in data_params.json, checked on --resume)."""
    return {
        "cleaning": asdict(opts.cleaning),
        "short_seq_prob": opts.short_seq_prob,
        "packing": opts.packing,
        "shuffle": opts.shuffle,
        "shuffle_seed": opts.shuffle_seed if opts.shuffle else None,
        # recorded only where they apply, so the records of other runs stay as they were
        **({"read_chunk_size": opts.read_chunk_size, "cut_records": True} if opts.cut_records else {}),
        **({"keep_whole_last_character": True} if opts.keep_whole_last_character else {}),
    }


def _prepare_out_dir(
    job: Job, opts: PreprocessOptions, fingerprint: dict[str, Any]
) -> dict[int, dict[str, Any]]:
    """Refuse, clear or resume an output directory; returns the completed units' states."""
    out, state_dir = job.out_dir, job.out_dir / STATE_DIR
    # A tokenizer trained by this run (--train-tokenizer) may already sit in the output directory.
    keep = {"tokenizer.json"} if opts.train_tokenizer else set()
    exists = out.is_dir() and any(p.name not in keep for p in out.iterdir())
    if exists and opts.overwrite:
        _remove_outputs(out)
    elif exists and not opts.resume:
        if state_dir.is_dir() and not (out / "data_params.json").is_file():
            raise DataError(
                f"output directory {out} holds an unfinished gptx preprocess run",
                hint="re-run with --resume to finish it with the same inputs and arguments, "
                "or with --overwrite to start over; --overwrite deletes only the files gptx preprocess wrote",
            )
        raise DataError(
            f"output directory {out} already exists and is not empty",
            hint="pass --overwrite to replace it, or --resume to finish an interrupted run",
        )
    out.mkdir(parents=True, exist_ok=True)
    done: dict[int, dict[str, Any]] = {}
    if opts.resume and state_dir.is_dir():
        args_file = state_dir / "args.json"
        if args_file.is_file() and json.loads(args_file.read_text()) != fingerprint:
            raise DataError(
                f"{out} was started with different inputs or arguments; --resume needs the same ones",
                hint="changed or fixed the input? re-run with --overwrite instead of --resume to start over, "
                "it deletes only the files gptx preprocess wrote; otherwise repeat the original arguments",
            )
        for f in state_dir.glob("unit-*.json"):
            st = json.loads(f.read_text())
            done[int(st["unit"])] = st
    elif opts.resume and exists and not state_dir.is_dir():
        raise DataError(
            f"{out} holds no gptx preprocess state to resume", hint="use --overwrite to start over"
        )
    state_dir.mkdir(exist_ok=True)
    for part in range(job.parts if job.parts > 1 else 0):  # every part the configs list exists
        (out / str(part)).mkdir(exist_ok=True)
    write_json(state_dir / "args.json", fingerprint, sort_keys=True)
    # Files of incomplete units and temporary files of a killed run are redone from scratch.
    for u in range(len(job.units)):
        if u not in done:
            for f in _unit_files(out, u):
                f.unlink()
    for f in [*out.glob(".*.tmp-*"), *out.glob("*/.*.tmp-*")]:
        if not _pid_alive(f.name.rsplit(".tmp-", 1)[1]):
            print(f"note: removed {f}, left by a preprocess run that did not finish", file=sys.stderr)
            f.unlink()
    return done


def _pid_alive(tag: str) -> bool:
    """Whether the process a temporary name's pid tag names still runs on this host."""
    pid = tag.removeprefix("old-")
    if not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_output_file(p: Path) -> bool:
    return (
        p.name == "data_params.json"
        or (p.name.startswith("data-") and p.suffix in (".h5", ".bin", ".idx"))
        or is_temp(p)
    )


def _remove_outputs(out: Path) -> None:
    """--overwrite: delete what gptx preprocess writes there (never anything else a user keeps there)."""
    shutil.rmtree(out / STATE_DIR, ignore_errors=True)
    for p in list(out.iterdir()):
        if p.is_dir() and p.name.isdigit():  # a Pile part directory
            for f in p.iterdir():
                if _is_output_file(f):
                    f.unlink()
            if not any(p.iterdir()):
                p.rmdir()
        elif p.is_file() and _is_output_file(p):
            p.unlink()
    left = sorted(p.name for p in out.iterdir() if p.name != "tokenizer.json")
    if left:
        print(
            f"note: --overwrite left {len(left)} file(s) it did not write in {out}: {', '.join(left[:5])}",
            file=sys.stderr,
        )


def _bounded_map(pool: Any, fn: Any, tasks: Iterator[tuple[Any, ...]], depth: int) -> Iterator[Any]:
    """Ordered (task, fn(*task)), at most `depth` tasks in flight (so reading never runs far ahead)."""
    if pool is None:
        for t in tasks:
            yield t, fn(*t)
        return
    pending: deque[tuple[Any, Any]] = deque()
    for t in tasks:
        pending.append((t, pool.apply_async(fn, t)))
        if len(pending) >= depth:
            t0, r = pending.popleft()
            yield t0, r.get()
    while pending:
        t0, r = pending.popleft()
        yield t0, r.get()


def _run_unit(
    job: Job,
    u: int,
    units: list[InputUnit],
    opts: PreprocessOptions,
    tok: Any,
    pool: Any,
    progress: _Progress,
    base_bytes: int,
) -> JobStats:
    stats = JobStats()
    v2 = opts.packing == "modelzoo-v2" and not opts.use_vsl  # VSL packs its own way (data/vsl.py)
    packer: Any = (ModelZooV2Packer if v2 else Packer)(
        opts.max_seq_length, tok.eos_id, tok.pad_id, opts.pack_sequences, opts.min_sequence_len
    )
    vsl_finetune = None
    if opts.use_vsl and opts.mode == "finetuning":
        from gptx_cli.data.vsl import VSLFinetunePacker

        vsl_finetune = VSLFinetunePacker(opts.max_seq_length, tok.pad_id, tok.eos_id, opts.read_chunk_size)
    elif opts.use_vsl:
        from gptx_cli.data.vsl import VSLPacker

        packer = VSLPacker(
            opts.max_seq_length,
            tok.eos_id,
            tok.pad_id,
            opts.min_sequence_len,
            opts.read_chunk_size,
            len(opts.text_key.encode("utf-8")),
        )
    writer: Any
    if opts.output_format == "hdf5":
        writer = _SampleWriter(job, u, opts.samples_per_file, opts.seed)
    elif opts.output_format == "corpus":
        writer = _CorpusWriter(job, u, opts.samples_per_file * opts.max_seq_length)
    else:
        from gptx_cli.data.mmidx import MMIDIDXWriter, best_dtype

        job.out_dir.mkdir(parents=True, exist_ok=True)
        writer = MMIDIDXWriter(job.out_dir / f"data-{u:05d}", best_dtype(tok.vocab_size))
    subsets = frozenset(opts.pile_subsets) if opts.pile_subsets else None
    shown = 0
    notes = ChatNotes()
    done_before = base_bytes
    short = None
    if opts.short_seq_prob > 0:
        import random

        from gptx_cli.data.pack import ShortSequences

        short = ShortSequences(opts.short_seq_prob, random.Random(opts.seed + u), packer)

    def emit(samples: np.ndarray) -> None:
        """Write pretraining samples, counting them as ModelZoo's get_data_stats does."""
        if len(samples):
            stats.num_masked_tokens += samples.shape[0] * opts.max_seq_length - int(samples[:, 1].sum())
        if len(samples) and not opts.use_vsl:  # ModelZoo counts VSL samples its own way
            ids = samples[:, 0]
            stats.sample_pad_tokens += int((ids == tok.pad_id).sum())
            stats.sample_non_pad_tokens += int(((ids != tok.eos_id) & (ids != tok.pad_id)).sum())
        writer.add(samples)

    for unit in units:
        if opts.mode == "finetuning":
            shown = _finetune_unit(
                unit, u, opts, writer, pool, stats, progress, done_before, shown, notes, vsl_finetune
            )
            done_before += unit.size
            stats.input_files += 1
            continue
        # v2 and VSL place EOS themselves (ModelZoo's _add_eos_to_doc); VSL also counts read chunks.
        # ModelZoo's find_token_range applies to v2 configs, VSL included (get_segment_indices).
        eos = not (v2 or opts.use_vsl)
        cut_endings = opts.packing == "modelzoo-v2" and not opts.keep_whole_last_character
        chunk_bytes = opts.read_chunk_size * 1024 if opts.cut_records else None
        tasks = (
            (
                unit.kind,
                unit.location,
                b,
                opts.text_key,
                subsets,
                opts.cleaning,
                eos,
                cut_endings,
                chunk_bytes,
                opts.use_vsl,
            )  # fmt: skip
            for b in iter_record_batches(unit, u, text_key=opts.text_key)
        )
        consumed = 0
        for task, res in _bounded_map(pool, _encode_batch, tasks, depth=2 * max(1, opts.processes) + 2):
            batch = task[2]
            if res.error is not None:
                raise DataError(res.error[0], hint=res.error[1])
            if res.problems:
                if opts.strict:
                    raise DataError(
                        res.problems[0], hint="remove --strict to skip bad records (they are counted)"
                    )
                for p in res.problems:
                    if shown < MAX_PROBLEMS_SHOWN:
                        print(f"warning: skipped {p}", file=sys.stderr)
                    shown += 1
            stats.documents += len(res.lengths)
            stats.documents_skipped += len(res.problems)
            stats.documents_filtered += res.filtered
            stats.documents_empty += res.empty
            stats.input_bytes += batch.raw_bytes
            for k, v in asdict(res.text).items():
                setattr(stats, k, getattr(stats, k) + v)
            stats.endings_cut += res.endings_cut
            stats.records_split += res.records_split
            stats.split_documents += res.split_documents
            if opts.use_vsl:
                emit(packer.add_documents(res.tokens, res.lengths, res.sizes))
            elif opts.output_format == "hdf5":
                samples = packer.add_documents(res.tokens, res.lengths)
                emit(short.apply(samples) if short is not None else samples)
            else:
                packer.stats.document_tokens += len(res.tokens)
                writer.add_documents(res.tokens, res.lengths)
            consumed = batch.consumed or consumed
            progress.update(unit.location, done_before + consumed, len(res.lengths), len(res.tokens))
        done_before += unit.size
        stats.input_files += 1
    if shown > MAX_PROBLEMS_SHOWN:
        print(f"warning: {shown - MAX_PROBLEMS_SHOWN} more bad records skipped", file=sys.stderr)
    for line in notes.warnings():
        print(line, file=sys.stderr)
    if vsl_finetune is not None:
        from gptx_cli.data.finetune import FinetuneStats

        st = FinetuneStats()
        writer.add(vsl_finetune.finish(st))
        _add_finetune_stats(stats, st)
    elif opts.output_format == "hdf5":
        last = packer.finish()
        emit(short.apply(last) if short is not None else last)
    writer.close()
    if opts.mode != "finetuning":
        stats.samples = packer.stats
        stats.documents_without_sample = getattr(packer, "documents_without_sample", 0)
    return stats


def _finetune_unit(
    unit: InputUnit,
    u: int,
    opts: PreprocessOptions,
    writer: Any,
    pool: Any,
    stats: JobStats,
    progress: _Progress,
    done_before: int,
    shown: int,
    notes: Any,
    vsl: Any = None,
) -> int:
    """Finetuning mode: records -> samples in the workers (gptx_cli.data.finetune), written in order;
    with VSL the workers give examples, packed here per read chunk (`vsl`, a vsl.VSLFinetunePacker).
    Warns of the first MAX_PROBLEMS_SHOWN skipped records (returns how many were skipped so far)."""
    spec = opts.finetuning
    tasks = (
        (
            unit.kind, unit.location, b, spec, opts.max_seq_length, opts.min_sequence_len, vsl is not None,
            opts.keep_whole_last_character,
        )
        for b in iter_record_batches(unit, u, text_key=opts.text_key, columns=spec.columns())
    )  # fmt: skip
    for task, res in _bounded_map(pool, _encode_finetune, tasks, depth=2 * max(1, opts.processes) + 2):
        batch = task[2]
        if res.error is not None:
            raise DataError(res.error[0], hint=res.error[1])
        if res.notes.skipped and opts.strict:
            raise DataError(
                f"{res.notes.skipped[0]}", hint="remove --strict to skip such records (they are counted)"
            )
        for p in res.notes.skipped:
            if shown < MAX_PROBLEMS_SHOWN:
                print(f"warning: skipped {p}", file=sys.stderr)
            shown += 1
        res.notes.skipped = []
        notes.add(res.notes)
        writer.add(vsl.add(res.records, res.stats) if vsl is not None else res.samples)
        st = res.stats
        _add_finetune_stats(stats, st)
        stats.input_bytes += batch.raw_bytes
        for k, v in asdict(res.text).items():
            setattr(stats, k, getattr(stats, k) + v)
        progress.update(unit.location, done_before + (batch.consumed or 0), st.examples, st.example_tokens)
    return shown


def _add_finetune_stats(stats: JobStats, st: Any) -> None:
    s = stats.samples
    stats.documents += st.examples
    stats.documents_skipped += st.examples_skipped_chat
    stats.examples_too_long += st.examples_too_long
    stats.examples_too_short += st.examples_too_short
    stats.num_masked_tokens += st.num_masked_tokens
    stats.endings_cut += st.endings_cut
    s.n_examples += st.n_examples
    s.num_tokens += st.num_tokens
    s.non_pad_tokens += st.non_pad_tokens
    s.num_pad_tokens += st.num_pad_tokens
    s.loss_valid_tokens += st.loss_valid_tokens
    s.document_tokens += st.example_tokens


def _run_job(
    job: Job, opts: PreprocessOptions, tok: Any, pool: Any, progress: _Progress, base_bytes: int
) -> JobStats:
    fingerprint = _args_fingerprint(opts, tok, job)
    done = _prepare_out_dir(job, opts, fingerprint)
    total = JobStats()
    for u, units in enumerate(job.units):
        if u in done:
            total.add(JobStats.from_dict(done[u]["stats"]))
            base_bytes += sum(x.size for x in units)
            continue
        stats = _run_unit(job, u, units, opts, tok, pool, progress, base_bytes)
        base_bytes += sum(x.size for x in units)
        write_json(
            job.out_dir / STATE_DIR / f"unit-{u:05d}.json",
            {"unit": u, "stats": stats.to_dict()},
            sort_keys=True,
        )
        total.add(stats)
    shuffled = job.out_dir / STATE_DIR / "shuffled"
    if opts.shuffle and opts.output_format == "hdf5" and not shuffled.exists():
        from gptx_cli.data.shuffle import shuffle_sample_files

        shuffle_sample_files(sorted(job.out_dir.glob("data-*.h5")), opts.shuffle_seed)
        shuffled.touch()
    if total.documents == 0:
        inputs = ", ".join(u.location for g in job.units for u in g)
        why = f" ({total.documents_filtered} left out by --pile-subsets)" if total.documents_filtered else ""
        if total.documents_skipped:
            raise DataError(
                f"no documents in {inputs}{why}: all {total.documents_skipped} records were skipped "
                "(the warnings above say why)"
            )
        raise DataError(f"no documents in {inputs}{why}: the input is empty")
    if opts.mode == "finetuning" and total.samples.n_examples == 0:
        raise DataError(
            f"{job.out_dir}: all {total.documents} examples were dropped ({total.examples_too_long} longer than "
            f"max_seq_length {opts.max_seq_length}, {total.examples_too_short} shorter than min_sequence_len "
            f"{opts.min_sequence_len})",
            hint="raise --max-seq-length or lower --min-sequence-len",
        )
    if opts.mode == "finetuning" and total.samples.loss_valid_tokens == 0:
        chat = opts.finetuning is not None and opts.finetuning.hook == "chat_read_hook"
        raise DataError(
            f"{job.out_dir}: loss_valid_tokens is 0: none of the {total.samples.n_examples} samples has a "
            "token with loss weight 1, so training on them learns nothing",
            hint="only turns with the role 'assistant' are trained, and roles are case-sensitive: the "
            "warnings above name the roles found"
            if chat
            else "check --completion-key",
        )
    return total


def _train_tokenizer(opts: PreprocessOptions, out_root: Path) -> str:
    """Train a byte-level BPE (as GPT-NeoX did on the Pile) on the inputs; save tokenizer.json."""
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, pre_tokenizers, trainers
    from tokenizers.models import BPE

    assert opts.train_tokenizer is not None
    if opts.dataset == "pile":
        assert opts.input_dir is not None
        units = pile_units(opts.input_dir, "train")
    elif opts.dataset == PYTHON_DOCS:
        units = expand_inputs([str(python_docs_sources()["train"])])
    else:
        units = expand_inputs(opts.inputs, split=opts.split)
    subsets = frozenset(opts.pile_subsets) if opts.pile_subsets else None

    def texts() -> Iterator[str]:
        for i, unit in enumerate(units):
            for b in iter_record_batches(unit, i, text_key=opts.text_key):
                yield from record_texts(
                    unit.kind, unit.location, b, text_key=opts.text_key, subsets=subsets
                ).texts

    tok = HFTokenizer(BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=opts.train_tokenizer,
        special_tokens=["<|endoftext|>", "<|padding|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts(), trainer=trainer)
    got = tok.get_vocab_size()
    if got < opts.train_tokenizer:
        print(
            f"warning: --train-tokenizer {opts.train_tokenizer:,}: the input gave only {got:,} vocabulary entries "
            f"(256 bytes, 2 special tokens and {got - MIN_TRAINED_VOCAB:,} merges: the BPE ran out of pairs "
            "to merge); the tokenizer has those, not the size asked for",
            file=sys.stderr,
        )
    out_root.mkdir(parents=True, exist_ok=True)
    path = out_root / "tokenizer.json"
    with atomic_path(path) as tmp:
        tok.save(str(tmp))
    return str(path)


def run_preprocess(opts: PreprocessOptions) -> dict[str, Any]:
    """Run the whole preprocessing; returns {job name: data_params dict}."""
    from gptx_cli.data.tokenizer import load_tokenizer

    if opts.output_format not in OUTPUT_FORMATS:
        raise UsageError(f"--output-format must be one of {', '.join(OUTPUT_FORMATS)}")
    if opts.max_seq_length < 1 or opts.processes < 1 or opts.samples_per_file < 1:
        raise UsageError("--max-seq-length, --processes and --samples-per-file must be positive")
    if opts.overwrite and opts.resume:
        raise UsageError("--overwrite and --resume exclude each other")
    if opts.packing not in ("gptx", "modelzoo-v2") or (
        opts.packing != "gptx" and opts.output_format != "hdf5"
    ):
        raise UsageError("ModelZoo v2 pretraining configs write HDF5 samples (--output-format hdf5)")
    if opts.use_vsl:
        from gptx_cli.data.vsl import check_vsl_options

        check_vsl_options(opts)
    if opts.mode == "finetuning":
        from gptx_cli.data.finetune import check_options

        check_options(opts)
    elif opts.mode != "pretraining":
        raise UsageError(f"--mode must be pretraining or finetuning (got '{opts.mode}')")
    if opts.keep_whole_last_character and opts.mode == "pretraining" and opts.packing != "modelzoo-v2":
        raise UsageError(
            "--keep-whole-last-character goes with --config (ModelZoo v2 pretraining) or --mode finetuning: "
            "the --input pretraining path (create_hdf5_dataset.py's rules) keeps every token already"
        )
    check_job_options(opts)
    tokenizer_spec = opts.tokenizer
    if opts.train_tokenizer is not None and opts.train_tokenizer < MIN_TRAINED_VOCAB:
        raise UsageError(
            f"--train-tokenizer {opts.train_tokenizer}: a byte-level BPE needs at least {MIN_TRAINED_VOCAB} "
            "entries (256 bytes + <|endoftext|> + <|padding|>); ask for more to get merges, e.g. 8000"
        )
    if opts.train_tokenizer:
        if opts.output_dir:
            root = Path(opts.output_dir)
        elif opts.dataset == PYTHON_DOCS:
            root = Path(DEFAULT_PYTHON_DOCS_DIR)
        else:
            root = default_pile_base(neox=False)
        if (root / "tokenizer.json").is_file() and opts.resume:
            tokenizer_spec = str(root / "tokenizer.json")
        else:
            if root.is_dir() and any(root.iterdir()) and not (opts.overwrite or opts.resume):
                raise DataError(
                    f"output directory {root} already exists and is not empty",
                    hint="pass --overwrite to replace it, or --resume to finish an interrupted run",
                )
            if opts.overwrite and root.is_dir():
                shutil.rmtree(root)
            tokenizer_spec = _train_tokenizer(opts, root)
    tok = load_tokenizer(tokenizer_spec, tokenizer_dir=opts.tokenizer_dir, backend=opts.tokenizer_backend)
    tok = _with_ids(tok, opts.eos_id, opts.pad_id)
    jobs = plan_jobs(opts, tok)
    total_bytes = sum(u.size for job in jobs for g in job.units for u in g)
    check_sample_memory(opts, total_bytes)
    cores = host_cores()
    if opts.processes > cores:
        print(
            f"note: --processes {opts.processes} is more than the {cores} cores here; using {cores} worker "
            "processes (the output is the same for any --processes)",
            file=sys.stderr,
        )
        opts = replace(opts, processes=cores)
    progress = _Progress(total_bytes, opts.progress)
    pool = None
    if opts.processes > 1:
        import multiprocessing as mp

        ctx = mp.get_context("fork" if sys.platform.startswith("linux") else "spawn")
        pool = ctx.Pool(
            opts.processes,
            _init_worker,
            (tokenizer_spec, opts.tokenizer_dir, opts.tokenizer_backend, (opts.eos_id, opts.pad_id)),
        )
    else:
        _WORKER["tok"] = tok
    results: dict[str, Any] = {}
    t0 = time.monotonic()
    try:
        base = 0
        for job in jobs:
            stats = _run_job(job, opts, tok, pool, progress, base)
            base += sum(u.size for g in job.units for u in g)
            params = _data_params(job, opts, tok, stats)
            post = params["post-process"]
            if (post["n_examples"] if opts.output_format == "hdf5" else stats.samples.document_tokens) == 0:
                raise DataError(
                    f"{job.name}: 0 samples from {stats.documents} document(s) "
                    f"({stats.samples.document_tokens} tokens) in "
                    f"{', '.join(params['gptx']['setup']['input'][:3])}",
                    hint=f"a sample needs at least --min-sequence-len {opts.min_sequence_len} tokens; "
                    "give more text or a smaller --max-seq-length / --min-sequence-len",
                )
            write_json(job.out_dir / "data_params.json", params, sort_keys=True)  # last: marks it complete
            results[job.name] = params
    finally:
        progress.close()
        if pool is not None:
            pool.terminate()
            pool.join()
    elapsed = time.monotonic() - t0
    for name, params in results.items():
        pp = params["post-process"] | params["gptx"]["post-process"]
        split = (
            f"; {pp['records_split']:,} records over read_chunk_size {opts.read_chunk_size:,} KiB cut into "
            f"{pp['split_documents']:,} pieces"
            if pp.get("records_split")
            else ""
        )
        print(
            f"{name}: {pp['n_examples']:,} samples, {pp['documents']:,} documents "
            f"({pp['documents_skipped']:,} skipped{split}), {pp['document_tokens']:,} tokens -> "
            f"{params['gptx']['setup']['output_dir']}",
            file=sys.stderr,
        )
    cut = sum(p["gptx"]["post-process"].get("endings_cut", 0) for p in results.values())
    if cut:
        print(endings_note(cut, opts.mode), file=sys.stderr)
    tokens = sum(p["gptx"]["post-process"]["document_tokens"] for p in results.values())
    print(
        f"done in {elapsed:.1f}s ({tokens / max(elapsed, 1e-9) / 1e6:.2f}M tokens/s, backend {tok.backend})",
        file=sys.stderr,
    )
    return results


MIN_RECORD_BYTES = 8  # the shortest fine-tuning record line ('{"m":[]}'): bounds the record count


def check_sample_memory(opts: PreprocessOptions, input_bytes: int) -> None:
    """Refuse, before any work, a --max-seq-length whose samples cannot be held in memory.

    Every sample is [rows, msl] int32 however few tokens it holds. Pretraining holds a few samples at a
    time (the packer's, a worker batch's, the writer's); fine-tuning pads each example to a sample of
    its own, and holds a worker batch of them (BATCH_RECORDS records, and their stacked copy) plus the
    writer's buffer (--samples-per-file), at most one per input record (bounded by the input's bytes)."""
    rows = 5 if opts.use_vsl else 3
    sample = rows * 4 * opts.max_seq_length
    held = 4
    if opts.mode == "finetuning":
        records = max(1, input_bytes // MIN_RECORD_BYTES)
        held = min(records, opts.samples_per_file) + 2 * min(records, BATCH_RECORDS)
    avail = host_available_bytes()
    if avail is None or sample * held <= avail:
        return
    gib = 2**30
    raise UsageError(
        f"--max-seq-length {opts.max_seq_length:,}: each sample is [{rows}, {opts.max_seq_length:,}] int32 "
        f"({sample / gib:.2f} GiB) and up to {held:,} are held at once ({sample * held / gib:,.1f} GiB), more "
        f"than the {avail / gib:.1f} GiB of memory available",
        hint="lower --max-seq-length"
        + (": fine-tuning pads every example to it" if opts.mode == "finetuning" else ""),
    )


def endings_note(n: int, mode: str) -> str:
    """The one line saying that ModelZoo's find_token_range bug was reproduced, and the switch."""
    what = (
        f"{n:,} examples' loss masks leave out trailing tokens of a region's last character"
        if mode == "finetuning"
        else f"{n:,} documents lost their last character's trailing tokens"
    )
    return (
        f"note: {what} (a character the tokenizer splits into several tokens), as ModelZoo's "
        "data_preprocessing/utils.py: find_token_range does; processing.gptx_keep_whole_last_character: true "
        "(--keep-whole-last-character) keeps them"
    )


def vsl_data_params(opts: PreprocessOptions) -> dict[str, Any]:
    from gptx_cli.data.vsl import VSL_FEATURES

    return {"features": list(VSL_FEATURES), "dataset": {"use_vsl": True}}


def modelzoo_split_params(params: dict[str, Any] | None, split: str) -> dict[str, Any] | None:
    """ModelZoo's copy of the YAML for one output of `setup.data_splits` (`split`: its directory under
    output_dir, e.g. "train"): its data is `data_splits_dir/split`, its output `output_dir/split`."""
    if params is None:
        return None
    out = copy.deepcopy(params)
    setup = out.setdefault("setup", {})
    splits_dir = setup.pop("data_splits_dir", None) or os.path.join(
        os.path.dirname(str(setup.get("output_dir", "./output/"))), "data_splits_dir"
    )
    setup.pop("data_splits", None)
    setup.pop("context_splits", None)
    data = setup.get("data") if isinstance(setup.get("data"), dict) else {}
    setup["data"] = {**data, "source": os.path.join(str(splits_dir), split)}
    setup["output_dir"] = os.path.join(str(setup.get("output_dir", "./output/")), split)
    return out


def _data_params(job: Job, opts: PreprocessOptions, tok: Any, stats: JobStats) -> dict[str, Any]:
    """ModelZoo's sections (`setup`, `processing`, `dataset`: its copy of the YAML, with the tokenizer's
    vocab_size, eos_id and pad_id as data_preprocessor.py adds them; `features`; `post-process`) and
    gptx's own record of what it ran under `gptx` (`setup`, `processing`, `dataset`, `post-process`)."""
    ids = {"vocab_size": tok.vocab_size, "eos_id": tok.eos_id, "pad_id": tok.pad_id}
    vsl = vsl_data_params(opts) if opts.use_vsl else {}
    mz = copy.deepcopy(opts.modelzoo_params) if opts.modelzoo_params is not None else None
    if mz is not None:
        modelzoo: dict[str, Any] = {
            "setup": mz.get("setup") or {},
            "processing": {**(mz.get("processing") or {}), **ids},
            "dataset": mz.get("dataset") or {},
        }
    else:  # a command-line run: the ModelZoo keys it has values for
        modelzoo = {
            "setup": {"output_dir": str(job.out_dir)},
            "processing": {"max_seq_length": opts.max_seq_length, **ids},
        } | ({"dataset": vsl["dataset"]} if vsl else {})
    gptx = _gptx_settings(job, opts, tok) | ({"dataset": vsl["dataset"]} if vsl else {})
    gptx["post-process"] = stats.gptx_post_process()
    return modelzoo | {
        "features": vsl.get("features", ["input_ids", "attention_mask", "labels"]),
        "post-process": stats.modelzoo_post_process(
            opts.mode, counted_samples=opts.output_format == "hdf5" and not opts.use_vsl
        ),
        "gptx": gptx,
    }


def _gptx_settings(job: Job, opts: PreprocessOptions, tok: Any) -> dict[str, Any]:
    # No timings, worker counts or absolute times: the same input gives the same file.
    return {
        "setup": {
            "dataset": opts.dataset,
            "split": job.name,
            "input": [u.location for g in job.units for u in g],
            "output_dir": str(job.out_dir),
            "output_format": opts.output_format,
            "parts": job.parts,
        },
        "processing": {
            "tokenizer": tok.source or tok.name,
            "vocab_size": tok.vocab_size,
            "eos_id": tok.eos_id,
            "pad_id": tok.pad_id,
            "max_seq_length": opts.max_seq_length,
            "pack_sequences": opts.pack_sequences,
            "min_sequence_len": opts.min_sequence_len,
            "text_key": opts.text_key,
            "samples_per_file": opts.samples_per_file,
            "seed": opts.seed,
            "pile_subsets": sorted(opts.pile_subsets) if opts.pile_subsets else None,
            "mode": opts.mode,
            "finetuning": opts.finetuning.to_dict() if opts.finetuning is not None else None,
            **_modelzoo_settings(opts),
            **({"read_chunk_size": opts.read_chunk_size} if opts.use_vsl else {}),
        },
    }
