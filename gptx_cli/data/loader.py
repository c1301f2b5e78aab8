"""The data loader for train and eval: `build_dataloader(DataSpec) -> GptxDataLoader`.

One map-style dataset over every file of one or many `data_dir`s: ModelZoo HDF5 sample files
(`data` [n, 3, msl]), ModelZoo corpus files (1-D `data`) and Megatron `.bin/.idx` pairs; token streams
are cut into msl+1 windows with stride msl, exactly as `gptx preprocess` packs them.

VSL (`use_vsl: true`, ModelZoo's GptHDF5MapDataProcessor meaning): every file must be a [n, 5, msl]
sample file (`gptx preprocess --use-vsl`), and batches also carry `attention_span` (the document
layout: key k is visible to queries k..k+span) and `position_ids`, which the train step and eval pass to
the model. Without use_vsl the first three rows of such files are read, as ModelZoo does.

Order. The loader walks a *global sample stream*: position g is sample `g % S` of epoch `g // S`
(S = samples per epoch; with `drop_last` the remainder of a global batch is dropped each epoch). With
`shuffle`, epoch e uses a permutation seeded by `(shuffle_seed, e)`. Global batch b is stream positions
`[b*B, (b+1)*B)` (B = `batch_size`, the global batch); rank r takes rows `r*B/W : (r+1)*B/W` of it, so
W ranks together see exactly what one process sees. The position (a global sample index) is all a
resume needs: `build_dataloader(spec, start_sample=loader.position)` continues where it stopped.
Training streams are infinite (epochs follow each other); `infinite=False` gives one pass (eval).
With `drop_last=False` an infinite stream simply runs into the next epoch, so batches keep their size.

Mixture (`mixture: [{data_dir, weight}, ...]`): the stream is cut in blocks of 1024 slots; each block
holds each component's share of slots (largest-remainder rounding of the weights) in a seeded order,
and component k's j-th slot takes sample j of that component's own (shuffled, cycling) stream. Every
slot is computable from its index, so resume stays exact.
"""

from __future__ import annotations

import bisect
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np

from gptx_cli.config.spec import DataSpec
from gptx_cli.data.hdf5 import COMPLETE_MARKER, h5_layout, sample_rows
from gptx_cli.data.mmidx import MMIDIDXReader
from gptx_cli.data.params import data_params, params_file
from gptx_cli.data.preprocess import STATE_DIR
from gptx_cli.errors import DataError

DEFAULT_MSL = 2048
MIXTURE_BLOCK = 1024
READ_AHEAD = 64  # samples per HDF5 read when batches read consecutive samples (_H5Samples.get_many)


# --------------------------------------------------------------------------------------------- sources


class _H5Samples:
    """A ModelZoo HDF5 sample file; the handle is opened lazily in whichever process reads it."""

    def __init__(self, path: Path, n: int, msl: int, rows: int = 3) -> None:
        self.path, self.n, self.msl, self.rows = path, n, msl, rows
        self._handle: Any = None
        self._pid = -1
        self._block: tuple[int, int, np.ndarray] | None = None  # samples [lo, hi) read ahead

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_handle": None, "_pid": -1, "_block": None}

    def _open(self) -> None:
        if self._pid != os.getpid():
            import h5py

            self._handle, self._pid = h5py.File(self.path, "r")["data"], os.getpid()
            check_integer_dtype(self.path, self._handle.dtype)

    def get(self, i: int) -> np.ndarray:
        self._open()
        row = np.asarray(self._handle[i, : self.rows], dtype=np.int64)
        check_sample(self.path, i, row)
        return row

    def get_many(self, ids: list[int]) -> list[np.ndarray]:
        """`get` of each id. A run of consecutive ids (a batch of unshuffled data) comes from one read
        of at least READ_AHEAD samples, kept for the next batches (each HDF5 read has a fixed cost)."""
        if len(ids) < 2 or ids != list(range(ids[0], ids[0] + len(ids))):
            return [self.get(i) for i in ids]
        lo, hi = ids[0], ids[-1] + 1
        if self._block is None or not (self._block[0] <= lo and hi <= self._block[1]):
            self._open()
            end = min(self.n, max(hi, lo + READ_AHEAD))
            self._block = (lo, end, np.asarray(self._handle[lo:end, : self.rows], dtype=np.int64))
        rows = self._block[2][lo - self._block[0] : hi - self._block[0]]
        ids_ok = rows[:, [0, 2]].min(initial=0) >= 0
        mask = rows[:, 1]
        if not (ids_ok and mask.min(initial=0) >= 0 and mask.max(initial=0) <= 1):
            for i, row in zip(ids, rows, strict=True):  # the first bad sample, with its message
                check_sample(self.path, i, row)
        return list(rows)


class _TokenWindows:
    """A 1-D token stream (corpus HDF5 or Megatron .bin) read as msl+1 windows with stride msl."""

    def __init__(self, path: Path, kind: str, n_tokens: int, msl: int) -> None:
        self.path, self.kind, self.msl = path, kind, msl
        self.n = max(0, (n_tokens - 1) // msl)
        self._tokens: Any = None
        self._pid = -1

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_tokens": None, "_pid": -1}

    def get(self, i: int) -> np.ndarray:
        if self._pid != os.getpid():
            if self.kind == "mmidx":
                self._tokens = MMIDIDXReader(self.path).tokens
            else:
                import h5py

                self._tokens = h5py.File(self.path, "r")["data"]
            self._pid = os.getpid()
            check_integer_dtype(self.path, self._tokens.dtype)
        w = np.asarray(self._tokens[i * self.msl : i * self.msl + self.msl + 1], dtype=np.int64)
        if w.size and w.min() < 0:
            raise DataError(f"{self.path}: window {i}: negative token id {int(w.min())}")
        return np.stack([w[:-1], np.ones(self.msl, dtype=np.int64), w[1:]])


def check_integer_dtype(path: Path, dtype: Any) -> None:
    """Token data must be integers: float ids would be truncated silently."""
    if np.dtype(dtype).kind not in "iu":
        raise DataError(f"{path}: dataset 'data' holds {np.dtype(dtype)} values; token ids must be integers")


def check_sample(path: Path, i: int, row: np.ndarray) -> None:
    """One sample's rows input_ids, attention_mask (the loss mask), labels: ids >= 0, mask 0 or 1."""
    ids = row[[0, 2]]
    if ids.size and ids.min() < 0:
        which = "input_ids" if row[0].min() < 0 else "labels"
        raise DataError(f"{path}: sample {i}: {which} holds token id {int(ids.min())} (token ids are >= 0)")
    mask = row[1]
    if mask.size and (mask.min() < 0 or mask.max() > 1):
        bad = int(mask[(mask < 0) | (mask > 1)][0])
        raise DataError(f"{path}: sample {i}: attention_mask holds {bad} (the loss mask is 0 or 1)")


def tokenizer_for_vocab(vocab_size: int) -> str:
    """The preset a model's vocab_size points at (padded NeoX vocabularies included), for hints."""
    if vocab_size == 50257:
        return "gpt2"
    if 50277 <= vocab_size <= 50432:
        return "neox-20b"
    return f"TOKENIZER_OF_VOCAB_{vocab_size}"


def with_model_preprocess_args(err: DataError, vocab_size: int, msl: int) -> DataError:
    """A missing-data hint completed with the config's --tokenizer and --max-seq-length, so following it
    gives data the next run accepts."""
    hint = err.hint or ""
    if "gptx preprocess" not in hint or "--max-seq-length" in hint or not hint.endswith("`"):
        return err
    extra = "" if "--tokenizer" in hint else f" --tokenizer {tokenizer_for_vocab(vocab_size)}"
    return DataError(err.message, hint=f"{hint[:-1]}{extra} --max-seq-length {msl}`")


def _preprocess_hint(data_dir: str) -> str:
    if "pile_original" in data_dir:
        neox = "neox" in data_dir
        return "create it with `gptx preprocess --dataset pile --input-dir PILE_DIR" + (
            " --tokenizer neox-20b`" if neox else "`"
        )
    return f"create it with `gptx preprocess --input FILES --output-dir {data_dir}`"


def _files_of(data_dir: str) -> list[tuple[Path, str]]:
    """(path, kind) for every data file of a directory (sorted) or a single file / .bin-.idx prefix."""
    p = Path(data_dir)
    if p.is_file() and p.suffix in (".h5", ".hdf5"):
        return [(p, "h5")]
    if p.suffix in (".idx", ".bin") or (p.with_suffix(".idx").is_file() and not p.is_dir()):
        return [(p.with_suffix(""), "mmidx")] if p.with_suffix(".idx").is_file() else []
    if not p.is_dir():
        raise DataError(f"data_dir {data_dir} does not exist", hint=_preprocess_hint(data_dir))
    found = []
    for f in sorted(p.iterdir()):
        if f.name.startswith("."):
            continue  # temporary files of a preprocess still running
        if f.suffix in (".h5", ".hdf5") and f.is_file():
            found.append((f, "h5"))
        elif f.suffix == ".idx" and f.with_suffix(".bin").is_file():
            found.append((f.with_suffix(""), "mmidx"))
    if not found:
        raise DataError(
            f"data_dir {data_dir} holds no .h5 or .bin/.idx data files", hint=_preprocess_hint(data_dir)
        )
    if any(kind == "h5" for _, kind in found):
        _check_complete(p)
    return found


ENV_ALLOW_INCOMPLETE = "GPTX_ALLOW_INCOMPLETE_DATA"


def allow_incomplete(enabled: bool = True) -> None:
    """What --allow-incomplete does: this process and the ranks it launches read HDF5 dirs that lack
    their completion marker."""
    if enabled:
        os.environ[ENV_ALLOW_INCOMPLETE] = "1"


def _check_complete(d: Path) -> None:
    """A preprocess output counts as complete only once its data_params.json (written last) exists, in
    the dir or, for a part dir of a split (`.../train_msl2048/0/`), in its parent: a killed or failed run
    leaves complete-looking data-*.h5 files without it, and training on them would use part of the
    corpus."""
    if os.environ.get(ENV_ALLOW_INCOMPLETE, "") not in ("", "0"):
        return
    if params_file(d) is not None:
        return
    started = (d / STATE_DIR).is_dir() or (d.parent / STATE_DIR).is_dir()
    raise DataError(
        f"data_dir {d} is incomplete: no {COMPLETE_MARKER}"
        + (" (its gptx preprocess run did not finish)" if started else ""),
        hint="re-run the same `gptx preprocess` command with --resume to finish it, "
        "or pass --allow-incomplete to use the files anyway",
    )


def recorded_loss_tokens(data_dir: str | Path) -> int | None:
    """The loss tokens a preprocess output holds, as its data_params.json records them (ModelZoo's and
    gptx's `post-process.loss_valid_tokens`; in the dir or, for a part dir of a split, its parent); None
    when it records none."""
    params = data_params(data_dir)
    value = params.statistics.get("loss_valid_tokens") if params else None
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _vsl_problem(data_dir: str, path: Path, kind: str) -> DataError:
    what = "token-stream (corpus or .bin/.idx) files" if kind != "samples" else "samples without VSL rows"
    return DataError(
        f"use_vsl: data_dir {data_dir} holds {what} ({path.name}), not [n, 5, msl] VSL samples "
        "with attention_span and position_ids",
        hint=f"preprocess it with `gptx preprocess --use-vsl ... --output-dir {data_dir}`, or set use_vsl: false",
    )


def _open_sources(data_dirs: Sequence[str], msl: int | None, use_vsl: bool = False) -> tuple[list[Any], int]:
    if isinstance(data_dirs, (str, os.PathLike)):
        data_dirs = [str(data_dirs)]  # a single directory written without a list
    if not data_dirs:
        raise DataError("no data_dir given", hint="set data_dir in the dataloader section")
    entries: list[tuple[Path, str, int, int | None]] = []
    for d in data_dirs:
        for path, kind in _files_of(str(d)):
            if kind == "mmidx":
                if use_vsl:
                    raise _vsl_problem(str(d), path, kind)
                entries.append((path, "mmidx", len(MMIDIDXReader(path).tokens), None))
            else:
                layout, n, file_msl = h5_layout(path)
                if use_vsl and (layout != "samples" or sample_rows(path) != 5):
                    raise _vsl_problem(str(d), path, layout)
                entries.append((path, layout, n, file_msl))
    sample_msls = {m for _, kind, _, m in entries if kind == "samples" and m is not None}
    if len(sample_msls) > 1:
        raise DataError(
            f"data files disagree on max_sequence_length: {sorted(sample_msls)} in {list(data_dirs)}"
        )
    if sample_msls:
        file_msl = sample_msls.pop()
        if msl is not None and msl != file_msl:
            first = next(p for p, kind, _, m in entries if kind == "samples")
            raise DataError(
                f"max_sequence_length is {msl} but {first} holds samples of length {file_msl}",
                hint=f"set max_sequence_length: {file_msl} or preprocess with --max-seq-length {msl}",
            )
        msl = file_msl
    msl = msl or DEFAULT_MSL
    sources: list[Any] = []
    for path, kind, n, file_msl in entries:
        if kind == "samples":
            assert file_msl is not None
            src: Any = _H5Samples(path, n, file_msl, rows=5 if use_vsl else 3)
        else:
            src = _TokenWindows(path, "mmidx" if kind == "mmidx" else "corpus", n, msl)
        if src.n > 0:
            sources.append(src)
    if not sources:
        raise DataError(
            f"data_dir {', '.join(map(str, data_dirs))} holds no samples",
            hint=_preprocess_hint(str(data_dirs[0])),
        )
    return sources, msl


def parse_data_subset(subset: str, n: int) -> np.ndarray:
    """ModelZoo `data_subset` ("0.0-0.5" or "0-0.1,0.5-0.6"): the sample indices kept, in order."""
    ranges = []
    for part in subset.split(","):
        m = re.fullmatch(r"\s*([0-9.]+)\s*-\s*([0-9.]+)\s*", part)
        if not m:
            raise DataError(f"data_subset '{subset}': expected ranges like '0.0-0.5,0.7-0.8'")
        lo, hi = float(m.group(1)), float(m.group(2))
        if not 0.0 <= lo <= hi <= 1.0:
            raise DataError(f"data_subset '{subset}': each range must satisfy 0 <= start <= end <= 1")
        ranges.append(np.arange(int(lo * n), int(hi * n), dtype=np.int64))
    return np.unique(np.concatenate(ranges)) if ranges else np.arange(0, dtype=np.int64)


class SampleStore:
    """The samples of one dataset (all files of its data_dirs, after data_subset and num_samples)."""

    def __init__(
        self,
        data_dirs: Sequence[str],
        msl: int | None,
        data_subset: str | None,
        num_samples: int | None,
        use_vsl: bool = False,
    ):
        self.data_dirs = list(data_dirs)
        self.sources, self.msl = _open_sources(self.data_dirs, msl, use_vsl)
        self._offsets = np.cumsum([0] + [s.n for s in self.sources]).tolist()
        total = self._offsets[-1]
        self._subset = parse_data_subset(data_subset, total) if data_subset else None
        n = len(self._subset) if self._subset is not None else total
        if num_samples is not None:
            n = min(n, int(num_samples))
        self.n = n
        if n == 0:
            raise DataError(f"data_subset '{data_subset}' leaves no samples in {', '.join(self.data_dirs)}")

    def __len__(self) -> int:
        return self.n

    def get(self, i: int) -> np.ndarray:
        if self._subset is not None:
            i = int(self._subset[i])
        k = bisect.bisect_right(self._offsets, i) - 1
        return self.sources[k].get(i - self._offsets[k])

    def get_many(self, ids: list[int]) -> list[np.ndarray]:
        """`get` of each id; consecutive ids in one file read at once (`_H5Samples.get_many`)."""
        if self._subset is not None:
            ids = [int(self._subset[i]) for i in ids]
        if ids:
            k = bisect.bisect_right(self._offsets, min(ids)) - 1
            source, lo = self.sources[k], self._offsets[k]
            if max(ids) < self._offsets[k + 1] and hasattr(source, "get_many"):  # all in one file
                return cast(list[np.ndarray], source.get_many([i - lo for i in ids]))
        return [self.get_unmapped(i) for i in ids]

    def get_unmapped(self, i: int) -> np.ndarray:
        """`get` of an index already through data_subset."""
        k = bisect.bisect_right(self._offsets, i) - 1
        return self.sources[k].get(i - self._offsets[k])


# ----------------------------------------------------------------------------------------------- order


class _EpochOrder:
    """Stream position -> sample index within one store: epochs of `n` (permuted when shuffled)."""

    def __init__(self, n: int, shuffle: bool, seed: int, tag: int = 0) -> None:
        self.n, self.shuffle, self.seed, self.tag = n, shuffle, seed, tag
        self._epoch = -1
        self._perm: np.ndarray | None = None

    def __call__(self, pos: int) -> int:
        epoch, i = divmod(pos, self.n)
        if not self.shuffle:
            return i
        if epoch != self._epoch:
            rng = np.random.default_rng([self.seed, self.tag, epoch])
            dtype = np.int32 if self.n < 2**31 else np.int64
            self._perm, self._epoch = rng.permutation(np.arange(self.n, dtype=dtype)), epoch
        assert self._perm is not None
        return int(self._perm[i])


def _block_counts(weights: Sequence[float]) -> np.ndarray:
    w = np.asarray(weights, dtype=np.float64)
    if (w < 0).any() or w.sum() <= 0:
        raise DataError(f"mixture weights must be >= 0 with a positive sum, got {list(weights)}")
    share = w / w.sum() * MIXTURE_BLOCK
    counts = np.floor(share).astype(np.int64)
    rest = MIXTURE_BLOCK - int(counts.sum())
    counts[np.argsort(-(share - counts), kind="stable")[:rest]] += 1
    return counts


@dataclass
class _Mixture:
    counts: np.ndarray  # slots per block, per component
    seed: int

    def __post_init__(self) -> None:
        self._base = np.repeat(np.arange(len(self.counts)), self.counts)
        self._cache: tuple[int, np.ndarray, np.ndarray] | None = None

    def component(self, g: int) -> tuple[int, int]:
        """(component k, k's own stream position) for mixture slot g."""
        block, slot = divmod(g, MIXTURE_BLOCK)
        if self._cache is None or self._cache[0] != block:
            order = np.random.default_rng([self.seed, 7919, block]).permutation(self._base)
            # rank of each slot among the same component's slots in this block
            within = np.zeros(MIXTURE_BLOCK, dtype=np.int64)
            seen = np.zeros(len(self.counts), dtype=np.int64)
            for s, k in enumerate(order):
                within[s] = seen[k]
                seen[k] += 1
            self._cache = (block, order, within)
        _, order, within = self._cache
        k = int(order[slot])
        return k, block * int(self.counts[k]) + int(within[slot])


# ---------------------------------------------------------------------------------------------- loader


class _MapDataset:
    """torch map-style dataset; keys are (component, sample index) resolved by the batch sampler."""

    def __init__(self, stores: list[SampleStore]) -> None:
        self.stores = stores

    def __getitem__(self, key: tuple[int, int]) -> np.ndarray:
        k, i = key
        return self.stores[k].get(i)

    def __getitems__(self, keys: list[tuple[int, int]]) -> list[np.ndarray]:
        """A batch's samples (torch's fetcher calls this): one store's keys go through `get_many`."""
        if keys and all(k == keys[0][0] for k, _ in keys):
            return self.stores[keys[0][0]].get_many([i for _, i in keys])
        return [self[key] for key in keys]

    def __len__(self) -> int:
        return sum(len(s) for s in self.stores)


def _collate(rows: list[np.ndarray]) -> dict[str, Any]:
    import torch

    from gptx_cli.data.vsl import VSL_FEATURES

    batch = torch.from_numpy(np.stack(rows).astype(np.int64, copy=False))
    # input_ids, attention_mask (the loss mask), labels; VSL rows add attention_span, position_ids.
    return {name: batch[:, k] for k, name in enumerate(VSL_FEATURES[: batch.shape[1]])}


CORE_KEYS = ("input_ids", "attention_mask", "labels")


def model_inputs(batch: dict[str, Any], device: Any) -> dict[str, Any]:
    """A batch's keys beyond input_ids / attention_mask (the loss mask) / labels, moved to `device`: the
    keyword arguments the train step and eval pass through to the model (VSL: attention_span,
    position_ids)."""
    return {k: v.to(device, non_blocking=True) for k, v in batch.items() if k not in CORE_KEYS}


class GptxDataLoader:
    """Iterable of batches (dicts of int64 tensors [per_rank_batch, msl]) with a resumable `position`."""

    def __init__(
        self,
        spec: DataSpec,
        stores: list[SampleStore],
        mixture: _Mixture | None,
        *,
        rank: int,
        world_size: int,
        start_sample: int,
        seed: int,
        infinite: bool,
        pin_memory: bool = False,
    ) -> None:
        self.spec, self.rank, self.world_size, self.infinite = spec, rank, world_size, infinite
        self.pin_memory = pin_memory
        self.global_batch_size = int(spec.batch_size)
        self.per_rank_batch_size = self.global_batch_size // world_size
        self.max_sequence_length = stores[0].msl
        self._dataset = _MapDataset(stores)
        self._mixture = mixture
        self._orders = [_EpochOrder(len(s), spec.shuffle, seed, tag=k) for k, s in enumerate(stores)]
        if mixture is None:
            n = len(stores[0])
        else:
            n = int(spec.num_samples) if spec.num_samples else sum(len(s) for s in stores)
        B = self.global_batch_size
        self.dataset_samples = n
        self.samples_per_epoch = n - n % B if spec.drop_last else n
        if self.samples_per_epoch == 0:
            raise DataError(
                f"{', '.join(stores[0].data_dirs)}: {n} samples, fewer than one global batch of {B} "
                "(drop_last is on)",
                hint="lower batch_size or set drop_last: false",
            )
        self.position = int(start_sample)

    # -- position ------------------------------------------------------------------------------------
    @property
    def epoch(self) -> int:
        return self.position // self.samples_per_epoch

    def state_dict(self) -> dict[str, int]:
        return {"position": self.position, "samples_per_epoch": self.samples_per_epoch}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.position = int(state["position"])

    def __len__(self) -> int:
        """Batches left in the pass (finite loaders only)."""
        if self.infinite:
            raise TypeError("an infinite (training) loader has no length")
        left = max(0, self.samples_per_epoch - self.position % self.samples_per_epoch)
        return -(-left // self.global_batch_size)

    # -- order ---------------------------------------------------------------------------------------
    def key(self, g: int) -> tuple[int, int]:
        """Stream position g -> (component, sample index)."""
        if self._mixture is None:
            # epoch e uses the first samples_per_epoch entries of its order over all n samples
            e, i = divmod(g, self.samples_per_epoch)
            return 0, self._orders[0](e * self._orders[0].n + i)
        k, j = self._mixture.component(g)
        return k, self._orders[k](j)

    def _pass_end(self) -> int | None:
        """Where a finite pass started at the current position stops (the end of that epoch)."""
        if self.infinite:
            return None
        return (self.position // self.samples_per_epoch + 1) * self.samples_per_epoch

    def _rank_batches(self, start: int, end: int | None) -> Iterator[list[tuple[int, int]]]:
        B, per, r = self.global_batch_size, self.per_rank_batch_size, self.rank
        b0 = start
        while end is None or b0 < end:
            lo, hi = b0 + r * per, b0 + (r + 1) * per
            if end is not None:
                hi = min(hi, end)
            # A rank whose share of a final partial eval batch is empty gets no batch for it.
            if hi > lo:
                yield [self.key(g) for g in range(lo, hi)]
            b0 += B

    def __iter__(self) -> Iterator[dict[str, Any]]:
        from torch.utils.data import DataLoader

        spec = self.spec
        workers = int(spec.num_workers or 0)
        kwargs: dict[str, Any] = {}
        if workers > 0:
            kwargs["persistent_workers"] = bool(spec.persistent_workers)
            if spec.prefetch_factor is not None:
                kwargs["prefetch_factor"] = int(spec.prefetch_factor)
        end = self._pass_end()
        loader: Any
        if workers == 0 and not self.pin_memory:
            # In this process: what torch's DataLoader does without workers (fetch a batch's samples,
            # collate them) without its per-batch machinery (part of a train step's loader cost).
            keys = self._rank_batches(self.position, end)
            loader = (_collate(self._dataset.__getitems__(k)) for k in keys)
        else:
            loader = DataLoader(
                cast(Any, self._dataset),
                batch_sampler=_IterSampler(self._rank_batches(self.position, end)),
                num_workers=workers,
                collate_fn=_collate,
                pin_memory=self.pin_memory,
                **kwargs,
            )
        for batch in loader:
            self.position += self.global_batch_size
            if end is not None:
                self.position = min(self.position, end)
            yield batch


class _IterSampler:
    """Wraps a generator so torch accepts it as a batch_sampler (an iterable of index lists)."""

    def __init__(self, it: Iterator[list[tuple[int, int]]]) -> None:
        self._it = it

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        return self._it


def build_dataloader(
    spec: DataSpec,
    *,
    rank: int = 0,
    world_size: int = 1,
    start_sample: int = 0,
    seed: int | None = None,
    infinite: bool = True,
    pin_memory: bool = False,
) -> GptxDataLoader:
    """The loader for one dataloader section; see the module docstring for order, sharding and resume.

    `seed` is used when the section has no `shuffle_seed`. `infinite=False` gives one pass (eval).
    `pin_memory=True` (for a CUDA device) lets host-to-device copies of batches run asynchronously."""
    if spec.batch_size <= 0 or spec.batch_size % world_size:
        raise DataError(
            f"batch_size {spec.batch_size} is the global batch and must divide evenly over {world_size} ranks"
        )
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside world_size {world_size}")
    shuffle_seed = spec.shuffle_seed if spec.shuffle_seed is not None else (seed or 0)
    msl = spec.max_sequence_length
    mixture: _Mixture | None = None
    if spec.mixture:
        stores = []
        for i, comp in enumerate(spec.mixture):
            if "data_dir" not in comp:
                raise DataError(f"mixture entry {i} has no data_dir")
            dirs = comp["data_dir"] if isinstance(comp["data_dir"], list) else [comp["data_dir"]]
            stores.append(
                SampleStore(dirs, msl, comp.get("data_subset", spec.data_subset), None, spec.use_vsl)
            )
            msl = stores[-1].msl
        if len({s.msl for s in stores}) > 1:
            raise DataError("mixture components disagree on max_sequence_length")
        mixture = _Mixture(_block_counts([float(c.get("weight", 1.0)) for c in spec.mixture]), shuffle_seed)
    else:
        stores = [SampleStore(spec.data_dir, msl, spec.data_subset, spec.num_samples, spec.use_vsl)]
    return GptxDataLoader(
        spec,
        stores,
        mixture,
        rank=rank,
        world_size=world_size,
        start_sample=start_sample,
        seed=shuffle_seed,
        infinite=infinite,
        pin_memory=pin_memory,
    )
