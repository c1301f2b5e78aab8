"""Variable sequence length (VSL): ModelZoo's document-packed samples with per-document positions.

Sample layout (`[n, 5, msl]` int32, ModelZoo's `create_features_auto_lm_vsl` in
`data_preparation/nlp/hdf5_preprocessing/utils.py`): rows `input_ids`, `input_mask` (the loss mask;
gptx's loader calls it `attention_mask`), `labels`, `attention_span`, `position_ids`. For the documents
d_1..d_k of one sample (each ending in EOS), concatenated: `input_ids` = all tokens but the last,
`labels` = all tokens but the first; `position_ids` restart at 0 with every document and
`attention_span` counts down to 0 at each document's last token (the last document lost its final
token, so its rows stop one earlier); `input_mask` is 1 except at each document's last token, whose
label is the next document's first token. Padding: `pad_id` in input_ids and labels, 0 in the others.

Placement (ModelZoo's `VSLLMDataPreprocessor.tokenize_text`), per document in input order:
- documents shorter than `min_sequence_len` tokens (EOS included) are dropped;
- a document longer than msl + 1 tokens is folded (`fold_long_doc`, on by default; off drops it): its
  full msl + 1 windows at stride msl each fill a sample of their own, and the rest (if at least 2
  tokens) is placed like a short document;
- a document goes into the newest open sample it fits in, scanning from the newest back to the oldest,
  or opens a new sample;
- once more than `files_per_record` (`--samples-per-file`) samples are open, the oldest
  `files_per_record` are written out; the rest follow at the end.

Where ModelZoo differs: it counts every document as len - 1 tokens against the sample's msl, which
admits a document that makes the sample one token longer than msl per extra document, and then stops
on its own "Wrong sequence length" assertion. gptx counts len - 1 for a sample's first document and
len for each further one (the input is all tokens but one), so every sample fits; on any input where
ModelZoo's run completes the samples are the same.

Unlike plain packing (one token stream cut every msl tokens, so documents straddle samples and attend
to their predecessors), no document shorter than msl + 2 tokens is ever split, samples end in
padding, and each token attends only to its own document (`attention_span`) with rotary positions
from its document's start (`position_ids`).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gptx_cli.data.pack import SampleStats
from gptx_cli.errors import UsageError

VSL_FEATURES = ("input_ids", "attention_mask", "labels", "attention_span", "position_ids")


def create_features_auto_lm_vsl(docs: list[np.ndarray], msl: int, pad_id: int) -> np.ndarray:
    """One VSL sample [5, msl] int32 from the documents of one bin (each with its EOS)."""
    lengths = np.array([len(d) for d in docs], dtype=np.int64)
    tokens = np.concatenate(docs).astype(np.int32, copy=False)
    n = len(tokens) - 1
    if n > msl or n < 1:
        raise ValueError(f"documents of {len(tokens)} tokens do not make a sample of msl {msl}")
    starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
    ends = np.repeat(np.cumsum(lengths), lengths)
    pos = np.arange(len(tokens)) - starts
    span = ends - 1 - np.arange(len(tokens))
    span[len(tokens) - lengths[-1] :] -= 1  # the last document lost its final token
    mask = (span != 0).astype(np.int32)
    mask[len(tokens) - lengths[-1] :] = 1
    out = np.zeros((5, msl), dtype=np.int32)
    out[0] = out[2] = pad_id
    out[0, :n] = tokens[:-1]
    out[1, :n] = mask[:n]
    out[2, :n] = tokens[1:]
    out[3, :n] = span[:n]
    out[4, :n] = pos[:n]
    return out


@dataclass
class VSLPacker:
    """Documents -> VSL samples with ModelZoo's placement; the same interface as `pack.Packer`."""

    msl: int
    eos_id: int
    pad_id: int
    min_sequence_len: int = 10
    files_per_record: int = 5000
    fold_long_doc: bool = True
    stats: SampleStats = field(default_factory=SampleStats)
    documents_discarded: int = 0

    def __post_init__(self) -> None:
        self._bins: list[list[np.ndarray]] = []
        self._room: list[int] = []  # input positions still free in each open bin

    def _new_bin(self, doc: np.ndarray) -> None:
        self._bins.append([doc])
        self._room.append(self.msl - (len(doc) - 1))

    def _place(self, doc: np.ndarray) -> None:
        for i in range(len(self._bins) - 1, -1, -1):
            if len(doc) <= self._room[i]:
                self._bins[i].append(doc)
                self._room[i] -= len(doc)
                return
        self._new_bin(doc)

    def _add(self, doc: np.ndarray) -> None:
        msl = self.msl
        if len(doc) < self.min_sequence_len:
            self.documents_discarded += 1
            self.stats.dropped_tokens += len(doc)
            return
        if len(doc) > msl + 1:
            if not self.fold_long_doc:
                self.documents_discarded += 1
                self.stats.dropped_tokens += len(doc)
                return
            full = (len(doc) - 1) // msl  # windows of msl + 1 tokens at stride msl
            for k in range(full):
                self._new_bin(doc[k * msl : k * msl + msl + 1])
            doc = doc[full * msl :]  # shares its first token with the last window
            if len(doc) < 2:
                return
        if len(doc) < 2:  # nothing to predict
            self.stats.dropped_tokens += len(doc)
            return
        self._place(doc)

    def _emit(self, count: int) -> np.ndarray:
        bins, self._bins = self._bins[:count], self._bins[count:]
        self._room = self._room[count:]
        if not bins:
            return np.zeros((0, 5, self.msl), dtype=np.int32)
        samples = np.stack([create_features_auto_lm_vsl(b, self.msl, self.pad_id) for b in bins])
        real = sum(sum(map(len, b)) - 1 for b in bins)  # input positions holding tokens
        s = self.stats
        s.n_examples += len(samples)
        s.num_tokens += len(samples) * self.msl
        s.non_pad_tokens += real
        s.num_pad_tokens += len(samples) * self.msl - real
        s.loss_valid_tokens += int(samples[:, 1].sum())
        return samples

    def add_documents(self, tokens: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """Samples written out after these documents (their tokens concatenated, EOS appended)."""
        self.stats.document_tokens += len(tokens)
        if not len(lengths):
            return np.zeros((0, 5, self.msl), dtype=np.int32)
        out = []
        for doc in np.split(tokens.astype(np.int32, copy=False), np.cumsum(lengths)[:-1]):
            self._add(doc)
            if len(self._bins) > self.files_per_record:
                out.append(self._emit(self.files_per_record))
        return np.concatenate(out) if out else np.zeros((0, 5, self.msl), dtype=np.int32)

    def finish(self) -> np.ndarray:
        return self._emit(len(self._bins))


def check_vsl_options(opts: Any) -> None:
    """`--use-vsl` with options it cannot honour: one-line errors; options it ignores: a note."""
    if getattr(opts, "mode", "pretraining") != "pretraining":
        raise UsageError(
            f"--use-vsl writes ModelZoo's pretraining VSL samples; --mode {opts.mode} has no VSL layout in gptx",
            hint="drop --use-vsl",
        )
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
    if not opts.pack_sequences:
        print(
            "note: --no-pack-sequences (pack_sequences: false) has no effect with --use-vsl: VSL places "
            "whole documents into samples",
            file=sys.stderr,
        )
