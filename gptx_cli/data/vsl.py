"""Variable sequence length (VSL): several documents (or fine-tuning examples) per sample, each with
its own attention span and positions, packed as ModelZoo 2.10's v2 preprocessing packs them.

Sample layout (`[n, 5, msl]` int32, ModelZoo's `VSLPretrainingTokenGenerator.create_features_auto_lm_vsl`
and `VSLFinetuningTokenGenerator.create_features_finetuning_vsl`): rows `input_ids`, `input_mask` (the
loss mask; gptx's loader calls it `attention_mask`), `labels`, `attention_span`, `position_ids`. For the
pieces p_1..p_k of one sample, concatenated: `input_ids` = all tokens but the last, `labels` = all
tokens but the first; `position_ids` restart at 0 with every piece and `attention_span` counts down to
0 at each piece's last token (the last piece lost its final token, so its rows stop one earlier).
The loss mask is the pieces' masks concatenated, all but the last (pretraining: 1 on every real
position, also where a document's EOS predicts the next document's first token) or all but the first
(fine-tuning: aligned with the labels, so a prompt's first token is never a target). Padding: `pad_id`
in input_ids and labels, 0 in the other rows.

Read chunks (ModelZoo's `data_reader.py: Reader.accumulate_and_yield`): records are read into chunks
of `read_chunk_size` KiB, counted as ModelZoo counts them (`get_data_size`: the UTF-8 bytes of each
record's data-key names and values; a record is checked against the limit by its values, then adds
names and values). A chunk closes before the record that would take it past the limit; a one-field
record larger than the limit is a chunk of its own. Chunks run on across the files of a unit of work.
Packing happens within each chunk.

Pretraining (`VSLPacker`; `chop_doc_into_msl`, `process_docs`, `append_within_max_length`):
- each document's tokens (without EOS) are cut into pieces of msl + 1 tokens at stride msl + 1; EOS is
  appended to the last piece when it is shorter, else written over its last token;
- pieces shorter than `min_sequence_len` are dropped;
- a chunk's pieces are sorted longest first (a stable sort) and filled into samples greedily: a piece
  opens a new sample when it would take the current one past msl tokens (a piece of msl + 1 tokens is
  a sample of its own).

Fine-tuning (`VSLFinetunePacker`; `append_within_max_length`): the examples a chunk keeps (at most msl
tokens each) are binned from the last backwards, each bin joining the nearest earlier one it fits in
(`pack_bins`), in input order.

Where ModelZoo differs: when a chunk gives more samples than it has records that gave a piece, ModelZoo
2.10's bookkeeping (`data_reader.py: DataFrame.tokenize`, its stats checkpoint list) raises IndexError
and its process stops writing (the run still exits 0); gptx writes the samples and says so. Records that
give no document (blank or malformed lines, empty texts) do not count towards a chunk's size in gptx.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gptx_cli.data.pack import SampleStats
from gptx_cli.errors import UsageError

VSL_FEATURES = ("input_ids", "attention_mask", "labels", "attention_span", "position_ids")
READ_CHUNK_KIB = 1024  # ModelZoo's read_chunk_size default (data_preprocessor.py)


def modelzoo_data_size(data: Any) -> int:
    """ModelZoo's `data_reader.get_data_size`: the bytes a record counts towards a read chunk."""
    if data is None:
        return 0
    if isinstance(data, str):
        return len(data.encode("utf-8"))
    if isinstance(data, bytes):
        return len(data)
    if isinstance(data, (tuple, list)):
        return sum(modelzoo_data_size(x) for x in data)
    if isinstance(data, dict):
        return sum(modelzoo_data_size(k) + modelzoo_data_size(v) for k, v in data.items())
    if isinstance(data, (int, float, bool, complex)):
        return sys.getsizeof(data)
    return len(str(data).encode("utf-8"))


def record_size(record: dict[str, Any]) -> tuple[int, int, bool]:
    """(bytes checked against the limit, bytes added to the chunk, one field) of a record of data keys."""
    values = sum(modelzoo_data_size(v) for v in record.values())
    return values, modelzoo_data_size(record), len(record) == 1


class ReadChunks:
    """ModelZoo's read-chunk boundaries over a stream of record sizes."""

    def __init__(self, read_chunk_kib: int = READ_CHUNK_KIB) -> None:
        self.limit = read_chunk_kib * 1024
        self.size = 0

    def add(self, check: int, add: int, one_field: bool = True) -> tuple[bool, bool]:
        """(close the chunk before this record, close it after) for the next record."""
        if one_field and check > self.limit:  # ModelZoo cuts it into chunks of their own; gptx: one
            before = self.size > 0
            self.size = 0
            return before, True
        before = self.size != 0 and self.size + check > self.limit
        self.size = add if before else self.size + add
        return before, False

    def reset(self) -> None:
        self.size = 0


def create_features_vsl(
    pieces: Sequence[np.ndarray], masks: Sequence[np.ndarray] | None, msl: int, pad_id: int, finetuning: bool
) -> np.ndarray:
    """One VSL sample [5, msl] int32 from the pieces of one bin (`masks`: their loss weights, else 1)."""
    lengths = np.array([len(p) for p in pieces], dtype=np.int64)
    tokens = np.concatenate(pieces).astype(np.int32, copy=False)
    n = len(tokens) - 1
    if n > msl:
        raise ValueError(f"pieces of {len(tokens)} tokens do not make a sample of msl {msl}")
    starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
    ends = np.repeat(np.cumsum(lengths), lengths)
    pos = np.arange(len(tokens)) - starts
    span = ends - 1 - np.arange(len(tokens))
    span[len(tokens) - lengths[-1] :] -= 1  # the last piece lost its final token
    out = np.zeros((5, msl), dtype=np.int32)
    out[0] = out[2] = pad_id
    out[0, :n] = tokens[:-1]
    if masks is None:
        out[1, :n] = 1
    else:
        mask = np.concatenate(masks).astype(np.int32, copy=False)
        out[1, :n] = mask[1:] if finetuning else mask[:-1]
    out[2, :n] = tokens[1:]
    out[3, :n] = span[:n]
    out[4, :n] = pos[:n]
    return out


def group_longest_first(lengths: Sequence[int], msl: int) -> list[list[int]]:
    """ModelZoo's `group_arrays_by_msl`: indices sorted by length (longest first, stable), filled
    greedily into groups of at most msl tokens (a longer piece is a group of its own)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    groups: list[list[int]] = []
    current: list[int] = []
    size = 0
    for i in order:
        if size + lengths[i] > msl:
            if current:
                groups.append(current)
            current, size = [], 0
        current.append(i)
        size += lengths[i]
    if current:
        groups.append(current)
    return groups


def pack_bins(lengths: Sequence[int], msl: int) -> list[list[int]]:
    """ModelZoo's `VSLFinetuningTokenGenerator.append_within_max_length`: bins of example indices, each
    of at most msl tokens; from the last example backwards, each bin joins the nearest earlier one it
    fits in (its examples after that bin's)."""
    bins = [[i] for i in range(len(lengths))]
    lens = list(lengths)
    i = len(bins) - 1
    while i > 0:
        for j in range(i - 1, -1, -1):
            if lens[i] + lens[j] <= msl:
                bins[j].extend(bins[i])
                lens[j] += lens[i]
                del bins[i], lens[i]
                break
        i -= 1
    return bins


def _modelzoo_note(samples: int, records: int, printed: list[bool]) -> None:
    if samples > records and not printed:
        printed.append(True)
        print(
            f"note: a read chunk gives {samples} VSL samples from {records} documents; ModelZoo 2.10 stops "
            "writing there (IndexError in data_reader.py: DataFrame.tokenize, exit 0), gptx writes them "
            "(docs/modelzoo-differences.md)",
            file=sys.stderr,
        )


def _add_sample_stats(stats: Any, samples: np.ndarray, pad_id: int, eos_id: int) -> int:
    """ModelZoo's get_data_stats over the samples' input_ids (EOS is not a non-pad token; with GPT-2's
    pad id = EOS id an EOS input counts as padding); returns loss_valid_tokens."""
    ids = samples[:, 0]
    stats.n_examples += len(samples)
    stats.num_tokens += ids.size
    stats.num_pad_tokens += int((ids == pad_id).sum())
    stats.non_pad_tokens += int(((ids != pad_id) & (ids != eos_id)).sum())
    loss = int(samples[:, 1].sum())
    stats.loss_valid_tokens += loss
    return loss


@dataclass
class VSLPacker:
    """Pretraining documents -> VSL samples, packed per read chunk; the interface of `pack.Packer`, fed
    documents without EOS (as `pack.ModelZooV2Packer`) and, per document, its record's chunk size."""

    msl: int
    eos_id: int
    pad_id: int
    min_sequence_len: int = 10
    read_chunk_size: int = READ_CHUNK_KIB  # KiB
    key_bytes: int = 4  # the UTF-8 bytes of the text key's name ("text")
    stats: SampleStats = field(default_factory=SampleStats)
    documents_discarded: int = 0  # documents that gave no piece of min_sequence_len tokens

    def __post_init__(self) -> None:
        self._chunks = ReadChunks(self.read_chunk_size)
        self._pieces: list[np.ndarray] = []
        self._records = 0  # records of the open chunk that gave a piece
        self._noted: list[bool] = []

    def _cut(self, doc: np.ndarray) -> list[np.ndarray]:
        size = self.msl + 1
        pieces = [doc[i : i + size] for i in range(0, len(doc), size)]
        if pieces and pieces[-1][-1] != self.eos_id:  # _add_eos_to_doc
            if len(pieces[-1]) < size:
                pieces[-1] = np.append(pieces[-1], np.int32(self.eos_id)).astype(np.int32)
            else:
                pieces[-1] = pieces[-1].copy()
                pieces[-1][-1] = self.eos_id
        kept = [p for p in pieces if len(p) >= self.min_sequence_len]
        self.stats.dropped_tokens += sum(len(p) for p in pieces) - sum(len(p) for p in kept)
        return kept

    def _close(self) -> np.ndarray:
        pieces, self._pieces = self._pieces, []
        records, self._records = self._records, 0
        if not pieces:
            return np.zeros((0, 5, self.msl), dtype=np.int32)
        groups = group_longest_first([len(p) for p in pieces], self.msl)
        _modelzoo_note(len(groups), records, self._noted)
        # A lone one-token piece (min_sequence_len < 2) predicts nothing: ModelZoo writes it as a sample
        # of padding only, gptx drops it.
        lone = [g for g in groups if len(g) == 1 and len(pieces[g[0]]) < 2]
        self.stats.dropped_tokens += len(lone)
        groups = [g for g in groups if g not in lone]
        if not groups:
            return np.zeros((0, 5, self.msl), dtype=np.int32)
        samples = np.stack(
            [create_features_vsl([pieces[i] for i in g], None, self.msl, self.pad_id, False) for g in groups]
        )
        _add_sample_stats(self.stats, samples, self.pad_id, self.eos_id)
        return samples

    def add_documents(
        self, tokens: np.ndarray, lengths: np.ndarray, sizes: np.ndarray | None = None
    ) -> np.ndarray:
        """Samples of the read chunks these documents close (`sizes`: each document's text in UTF-8
        bytes as read, before any clean-up; None: every document in the one chunk)."""
        out = []
        self.stats.document_tokens += len(tokens)
        docs = np.split(tokens.astype(np.int32, copy=False), np.cumsum(lengths)[:-1]) if len(lengths) else []
        for k, doc in enumerate(docs):
            if sizes is not None:
                size = int(sizes[k])
                before, after = self._chunks.add(size, size + self.key_bytes)
            else:
                before = after = False
            if before:
                out.append(self._close())
            pieces = self._cut(doc) if len(doc) else []
            if pieces:
                self._pieces += pieces
                self._records += 1
            else:
                self.documents_discarded += 1
            if after:
                out.append(self._close())
        return np.concatenate(out) if out else np.zeros((0, 5, self.msl), dtype=np.int32)

    def finish(self) -> np.ndarray:
        self._chunks.reset()
        return self._close()


@dataclass
class VSLFinetunePacker:
    """Fine-tuning examples -> VSL samples, binned per read chunk (`pack_bins`)."""

    msl: int
    pad_id: int
    eos_id: int
    read_chunk_size: int = READ_CHUNK_KIB  # KiB

    def __post_init__(self) -> None:
        self._chunks = ReadChunks(self.read_chunk_size)
        self._examples: list[tuple[Sequence[int], Sequence[int]]] = []

    def _close(self, stats: Any) -> np.ndarray:
        examples, self._examples = self._examples, []
        if not examples:
            return np.zeros((0, 5, self.msl), dtype=np.int32)
        bins = pack_bins([len(ids) for ids, _ in examples], self.msl)  # never more bins than examples
        samples = np.stack(
            [
                create_features_vsl(
                    [np.asarray(examples[i][0], dtype=np.int32) for i in b],
                    [np.asarray(examples[i][1], dtype=np.int32) for i in b],
                    self.msl,
                    self.pad_id,
                    True,
                )
                for b in bins
            ]
        )
        loss = _add_sample_stats(stats, samples, self.pad_id, self.eos_id)
        stats.num_masked_tokens += len(samples) * self.msl - loss
        return samples

    def add(
        self,
        records: Iterable[tuple[tuple[int, int, bool], tuple[Sequence[int], Sequence[int]] | None]],
        stats: Any,
    ) -> np.ndarray:
        """Samples of the chunks these records close: per record its `record_size` and its example
        (ids, loss weights) when kept; `stats` (a FinetuneStats) gets the samples' counts."""
        out = []
        for (check, add, one_field), example in records:
            before, after = self._chunks.add(check, add, one_field)
            if before:
                out.append(self._close(stats))
            if example is not None:
                self._examples.append(example)
            if after:
                out.append(self._close(stats))
        return np.concatenate(out) if out else np.zeros((0, 5, self.msl), dtype=np.int32)

    def finish(self, stats: Any) -> np.ndarray:
        self._chunks.reset()
        return self._close(stats)


def check_vsl_options(opts: Any) -> None:
    """`--use-vsl` with options it cannot honour: one-line errors; options it ignores: a note."""
    if getattr(opts, "short_seq_prob", 0.0):
        raise UsageError(
            f"short_seq_prob {opts.short_seq_prob} with use_vsl is not supported by gptx (ModelZoo cuts VSL "
            "documents, not samples)",
            hint="set short_seq_prob: 0.0, or drop use_vsl",
        )
    if opts.output_format != "hdf5":
        raise UsageError(
            f"--use-vsl writes HDF5 sample files; --output-format {opts.output_format} (a token stream) "
            "carries no document boundaries",
            hint="drop --output-format, or drop --use-vsl",
        )
    if opts.read_chunk_size < 1:
        raise UsageError(f"read_chunk_size must be a positive number of KiB, got {opts.read_chunk_size}")
    if not opts.pack_sequences and getattr(opts, "mode", "pretraining") == "pretraining":
        print(
            "note: --no-pack-sequences (pack_sequences: false) has no effect with --use-vsl: VSL places "
            "whole documents into samples",
            file=sys.stderr,
        )
