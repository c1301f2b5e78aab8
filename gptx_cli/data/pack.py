"""Documents -> ModelZoo training samples.

ModelZoo's pretraining semantics: every document ends with EOS (appended unless its tokens already end
with it). With packing (the default) documents are concatenated and cut into chunks of msl+1 tokens
with stride msl (consecutive chunks share one token, so every token is predicted once); without
packing each document is cut on its own. A final short chunk is padded, or dropped when it holds fewer
than `min_sequence_len` tokens. Each chunk gives `input_ids = chunk[:-1]`, `labels = chunk[1:]`,
`attention_mask` = 1 on real positions (it is the loss mask), pad_id elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class SampleStats:
    """The counts ModelZoo writes to data_params.json."""

    n_examples: int = 0
    num_tokens: int = 0  # n_examples * msl
    non_pad_tokens: int = 0  # real (not padding) input positions
    num_pad_tokens: int = 0
    loss_valid_tokens: int = 0  # sum of attention_mask
    document_tokens: int = 0  # tokens of all documents, EOS included
    dropped_tokens: int = 0  # tokens of chunks shorter than min_sequence_len

    def add(self, other: SampleStats) -> None:
        for k in self.__dataclass_fields__:
            setattr(self, k, getattr(self, k) + getattr(other, k))


def samples_from_chunks(chunks: list[np.ndarray], msl: int, pad_id: int) -> np.ndarray:
    """[n, 3, msl] int32 from chunks of at most msl+1 tokens."""
    out = np.full((len(chunks), 3, msl), pad_id, dtype=np.int32)
    out[:, 1] = 0
    for i, c in enumerate(chunks):
        n = len(c) - 1
        out[i, 0, :n] = c[:-1]
        out[i, 1, :n] = 1
        out[i, 2, :n] = c[1:]
    return out


@dataclass
class Packer:
    """Turns a stream of tokenised documents into samples; `finish()` flushes the last short chunk."""

    msl: int
    eos_id: int
    pad_id: int
    pack_sequences: bool = True
    min_sequence_len: int = 10
    stats: SampleStats = field(default_factory=SampleStats)

    def __post_init__(self) -> None:
        self._buf = np.zeros(0, dtype=np.int32)
        self.documents_without_sample = 0  # ModelZoo's discarded_files (without packing)

    def _count(self, samples: np.ndarray) -> np.ndarray:
        real = int(samples[:, 1].sum())
        self.stats.n_examples += len(samples)
        self.stats.num_tokens += samples.shape[0] * self.msl
        self.stats.non_pad_tokens += real
        self.stats.num_pad_tokens += samples.shape[0] * self.msl - real
        self.stats.loss_valid_tokens += real
        return samples

    def _full_chunks(self, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Samples of all full msl+1 windows (stride msl) of `tokens`, and the leftover tail."""
        msl = self.msl
        k = max(0, (len(tokens) - 1) // msl)
        if k == 0:
            return np.zeros((0, 3, msl), dtype=np.int32), tokens
        idx = np.arange(k)[:, None] * msl + np.arange(msl)[None, :]
        samples = np.empty((k, 3, msl), dtype=np.int32)
        samples[:, 0] = tokens[idx]
        samples[:, 1] = 1
        samples[:, 2] = tokens[idx + 1]
        return samples, tokens[k * msl :]

    def _tail(self, tail: np.ndarray, shared_first: bool) -> np.ndarray:
        """The padded sample of a final short chunk, or nothing when it is under min_sequence_len.

        `shared_first`: the tail's first token is the last token of the previous chunk (already seen)."""
        # A tail of one shared token has nothing left to predict.
        if len(tail) < max(2, self.min_sequence_len):
            self.stats.dropped_tokens += len(tail) - (1 if shared_first else 0)
            return np.zeros((0, 3, self.msl), dtype=np.int32)
        return samples_from_chunks([tail], self.msl, self.pad_id)

    def add_documents(self, tokens: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """Samples completed by these documents (their tokens concatenated, EOS already appended)."""
        self.stats.document_tokens += len(tokens)
        if self.pack_sequences:
            samples, self._buf = self._full_chunks(np.concatenate([self._buf, tokens.astype(np.int32)]))
            return self._count(samples)
        parts = []
        for doc in np.split(tokens.astype(np.int32), np.cumsum(lengths)[:-1]):
            full, tail = self._full_chunks(doc)
            last = self._tail(tail, shared_first=len(full) > 0)
            if not len(full) and not len(last):
                self.documents_without_sample += 1
            parts += [full, last]
        return self._count(np.concatenate(parts) if parts else np.zeros((0, 3, self.msl), dtype=np.int32))

    def finish(self) -> np.ndarray:
        if not self.pack_sequences or len(self._buf) == 0:
            return np.zeros((0, 3, self.msl), dtype=np.int32)
        tail, self._buf = self._buf, np.zeros(0, dtype=np.int32)
        return self._count(self._tail(tail, shared_first=self.stats.n_examples > 0))


def append_eos(docs: list[np.ndarray], eos_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate documents, appending EOS to each unless it already ends with one -> (tokens, lengths)."""
    eos = np.array([eos_id], dtype=np.int32)
    pieces: list[np.ndarray] = []
    lengths = np.empty(len(docs), dtype=np.int64)
    for i, ids in enumerate(docs):
        pieces.append(ids)
        if len(ids) == 0 or ids[-1] != eos_id:
            pieces.append(eos)
            lengths[i] = len(ids) + 1
        else:
            lengths[i] = len(ids)
    if not pieces:
        return np.zeros(0, dtype=np.int32), lengths
    return np.concatenate(pieces).astype(np.int32, copy=False), lengths


class ShortSequences:
    """ModelZoo's `short_seq_prob`: each sample, in order, is cut short with this probability.

    As PretrainingTokenGenerator does per chunk: `if rng.random() < p: chunk = chunk[:rng.randint(2, msl - 1)]`
    (`rng = random.Random(seed)`), then the sample is rebuilt and padded. Counts in `packer.stats` follow."""

    def __init__(self, prob: float, rng: Any, packer: Packer) -> None:
        self.prob, self.rng, self.packer = prob, rng, packer

    def apply(self, samples: np.ndarray) -> np.ndarray:
        msl, stats = self.packer.msl, self.packer.stats
        for i in range(len(samples)):
            if self.rng.random() < self.prob:
                keep = self.rng.randint(2, msl - 1) - 1  # positions left: chunk[:k] gives k - 1 inputs
                real = int(samples[i, 1].sum())
                if keep < real:
                    samples[i, 0, keep:] = self.packer.pad_id
                    samples[i, 1, keep:] = 0
                    samples[i, 2, keep:] = self.packer.pad_id
                    stats.non_pad_tokens -= real - keep
                    stats.loss_valid_tokens -= real - keep
                    stats.num_pad_tokens += real - keep
        return samples


def concat_documents(docs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate documents as they are (no EOS) -> (tokens, lengths)."""
    lengths = np.array([len(d) for d in docs], dtype=np.int64)
    if not docs:
        return np.zeros(0, dtype=np.int32), lengths
    return np.concatenate(docs).astype(np.int32, copy=False), lengths


@dataclass
class ModelZooV2Packer:
    """ModelZoo v2's PretrainingTokenGenerator (chop_doc_into_msl, process_docs, encode_leftover_prefix)
    for text documents, fed documents without EOS:

    - a document's tokens (after the carried prefix, with pack_sequences) are cut into chunks of msl+1
      at stride msl+1: consecutive samples share no token;
    - with pack_sequences the last short chunk is carried to the next document, else it is a chunk too;
    - EOS goes on the document's last chunk: appended when that chunk is short, written over its last
      token when it is full, and not at all when the document gave no chunk (a short document packed
      into the carried prefix gets none);
    - a chunk under min_sequence_len tokens gives no sample; the prefix left at the end gets EOS and is
      the last sample.
    """

    msl: int
    eos_id: int
    pad_id: int
    pack_sequences: bool = True
    min_sequence_len: int = 10
    stats: SampleStats = field(default_factory=SampleStats)

    def __post_init__(self) -> None:
        self._prefix = np.zeros(0, dtype=np.int32)
        # ModelZoo's discarded_files (process_docs): documents whose chunks all gave no sample
        self.documents_without_sample = 0

    def _samples(self, chunks: list[np.ndarray]) -> np.ndarray:
        kept = [c for c in chunks if len(c) >= max(2, self.min_sequence_len)]
        self.stats.dropped_tokens += sum(len(c) for c in chunks if len(c) < max(2, self.min_sequence_len))
        out = samples_from_chunks(kept, self.msl, self.pad_id)
        real = int(out[:, 1].sum())
        self.stats.n_examples += len(out)
        self.stats.num_tokens += len(out) * self.msl
        self.stats.non_pad_tokens += real
        self.stats.num_pad_tokens += len(out) * self.msl - real
        self.stats.loss_valid_tokens += real
        return out

    def _eos_on_last(self, chunks: list[np.ndarray]) -> None:
        if chunks and chunks[-1][-1] != self.eos_id:
            last = chunks[-1]
            if len(last) < self.msl + 1:
                chunks[-1] = np.append(last, np.int32(self.eos_id)).astype(np.int32)
            else:
                chunks[-1] = last.copy()
                chunks[-1][-1] = self.eos_id

    def add_documents(self, tokens: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        self.stats.document_tokens += len(tokens)
        size = self.msl + 1
        chunks_all: list[np.ndarray] = []
        for doc in np.split(tokens.astype(np.int32), np.cumsum(lengths)[:-1]):
            if not len(doc):
                continue
            seq = np.concatenate([self._prefix, doc]) if self.pack_sequences else doc
            full = len(seq) // size
            chunks = [seq[i * size : (i + 1) * size] for i in range(full)]
            rest = seq[full * size :]
            if self.pack_sequences:
                self._prefix = rest
            elif len(rest):
                chunks.append(rest)
            self._eos_on_last(chunks)
            if chunks and all(len(c) < max(2, self.min_sequence_len) for c in chunks):
                self.documents_without_sample += 1
            chunks_all += chunks
        return self._samples(chunks_all)

    def finish(self) -> np.ndarray:
        if not self.pack_sequences or not len(self._prefix):
            return np.zeros((0, 3, self.msl), dtype=np.int32)
        chunks = [self._prefix]
        self._prefix = np.zeros(0, dtype=np.int32)
        self._eos_on_last(chunks)
        return self._samples(chunks)
