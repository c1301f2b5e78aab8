"""ModelZoo HDF5 files: the sample format read by `GptHDF5MapDataProcessor`, and the 1-D corpus format.

Sample file: dataset `data`, int32, shape `[n, 3, msl]` with rows `input_ids`, `attention_mask` (the loss
mask), `labels` (VSL files, `gptx_cli.data.vsl`: `[n, 5, msl]`, adding `attention_span` and
`position_ids`); attribute `n_examples`. Chunked one sample per chunk (random access reads one chunk)
and compressed (HDF5 byte-shuffle + gzip level 1, filters every HDF5 reader has). Corpus file: dataset `data`, int32, shape `[n_tokens]` (documents concatenated,
each ending in EOS); attributes `n_tokens`, `n_documents`.

Files are written under a temporary name in the same directory and renamed when complete; timestamps
are not recorded, so the same samples give byte-identical files.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from gptx_cli.errors import DataError
from gptx_cli.fsutil import atomic_path

SAMPLE_FEATURES = ("input_ids", "attention_mask", "labels")
COMPRESSION = "gzip"
COMPRESSION_LEVEL = 1  # with the byte-shuffle filter: as small as gzip-4 at twice the speed


COMPLETE_MARKER = "data_params.json"  # written last by `gptx preprocess` (and ModelZoo's preprocessing)


def mark_complete(data_dir: str | os.PathLike[str], params: dict | None = None) -> Path:
    """Write `data_dir`'s completion marker (data_params.json), for data made without `gptx preprocess`."""
    from gptx_cli.fsutil import write_json

    return write_json(Path(data_dir) / COMPLETE_MARKER, params or {"processing": {}}, sort_keys=True)


def write_sample_file(path: str | os.PathLike[str], samples: np.ndarray) -> None:
    """Write `samples` ([n, 3, msl] int32, or [n, 5, msl] for VSL) to `path` atomically."""
    import h5py

    path = Path(path)
    if samples.ndim != 3 or samples.shape[1] not in (3, 5):
        raise ValueError(f"samples must be [n, 3, msl] or [n, 5, msl], got {samples.shape}")
    rows, msl = samples.shape[1], samples.shape[2]
    with atomic_path(path) as tmp, h5py.File(tmp, "w", libver="earliest") as f:
        f.create_dataset(
            "data",
            data=samples.astype(np.int32, copy=False),
            dtype="i4",
            chunks=(1, rows, msl) if len(samples) else None,
            compression=COMPRESSION if len(samples) else None,
            compression_opts=COMPRESSION_LEVEL if len(samples) else None,
            shuffle=bool(len(samples)),
            track_times=False,
        )
        f.attrs["n_examples"] = len(samples)


def write_corpus_file(path: str | os.PathLike[str], tokens: np.ndarray, n_documents: int) -> None:
    """Write a 1-D token stream to `path` atomically (ModelZoo corpus layout)."""
    import h5py

    path = Path(path)
    chunk = int(min(max(len(tokens), 1), 1 << 16))
    with atomic_path(path) as tmp, h5py.File(tmp, "w", libver="earliest") as f:
        f.create_dataset(
            "data",
            data=tokens.astype(np.int32, copy=False),
            dtype="i4",
            chunks=(chunk,) if len(tokens) else None,
            compression=COMPRESSION if len(tokens) else None,
            compression_opts=COMPRESSION_LEVEL if len(tokens) else None,
            shuffle=bool(len(tokens)),
            track_times=False,
        )
        f.attrs["n_tokens"] = len(tokens)
        f.attrs["n_documents"] = n_documents


def h5_layout(path: str | os.PathLike[str]) -> tuple[str, int, int | None]:
    """('samples', n_examples, msl) or ('corpus', n_tokens, None) for an HDF5 file, or DataError."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            if "data" not in f:
                raise DataError(f"{path}: no dataset 'data' (not a ModelZoo HDF5 file)")
            ds = f["data"]
            if ds.ndim == 3 and ds.shape[1] in (3, 5):
                n = int(f.attrs.get("n_examples", ds.shape[0]))
                return "samples", min(n, ds.shape[0]), int(ds.shape[2])
            if ds.ndim == 1:
                return "corpus", int(ds.shape[0]), None
            raise DataError(
                f"{path}: dataset 'data' has shape {ds.shape}; expected [n, 3, msl], [n, 5, msl] or [n_tokens]"
            )
    except OSError as err:
        raise DataError(f"{path}: not a readable HDF5 file ({err})") from None


def sample_rows(path: str | os.PathLike[str]) -> int:
    """Rows per sample of a sample file: 3, or 5 for VSL (attention_span, position_ids)."""
    import h5py

    with h5py.File(path, "r") as f:
        return int(f["data"].shape[1])


def read_samples(path: str | os.PathLike[str]) -> np.ndarray:
    """The whole `[n, 3, msl]` array of a sample file (tests, tools)."""
    import h5py

    with h5py.File(path, "r") as f:
        return np.asarray(f["data"][: int(f.attrs["n_examples"])])
