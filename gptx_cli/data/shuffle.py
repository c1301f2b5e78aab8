"""ModelZoo's `shuffle: true` for written sample files (data_preprocessor.py), with the same numpy calls.

ModelZoo shuffles in two passes. First, each chunk of samples a writer produces goes, sample by sample,
to an output file drawn with `np.random.choice(np.arange(n_files), n)` after `np.random.seed(shuffle_seed)`
(one writer; a writer `i` of several seeds `shuffle_seed + i`). Second, every output file, in sorted
order `pid`, is permuted in place: `np.random.seed(shuffle_seed + pid)`, `idx = np.arange(n)`,
`np.random.shuffle(idx)`, `data = data[idx]`. gptx runs both passes over the files one unshuffled run
wrote (each file is one chunk of the first pass), keeping the number and names of the files.
Memory stays at one file's samples: the first pass appends raw rows to per-destination temporary files.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def shuffle_sample_files(files: list[Path], shuffle_seed: int) -> None:
    """Shuffle the samples of these HDF5 sample files across and within them (ModelZoo's two passes)."""
    from gptx_cli.data.hdf5 import read_samples, write_sample_file
    from gptx_cli.fsutil import temp_path

    if not files:
        return
    n_files = len(files)
    raw = [temp_path(f, f"shuffle-{os.getpid()}") for f in files]
    shape: tuple[int, ...] | None = None
    np.random.seed(shuffle_seed)
    handles = [open(r, "wb") for r in raw]  # noqa: SIM115 - closed below
    try:
        for f in files:
            rows = read_samples(f).astype(np.int32, copy=False)
            shape = rows.shape[1:]
            dest = np.random.choice(np.arange(n_files), len(rows))
            for d in np.unique(dest):
                handles[d].write(np.ascontiguousarray(rows[dest == d]).tobytes())
    finally:
        for h in handles:
            h.close()
    assert shape is not None
    for pid, (f, r) in enumerate(zip(files, raw, strict=True)):
        rows = np.fromfile(r, dtype=np.int32).reshape(-1, *shape)
        r.unlink()
        if not len(rows):  # no sample drew this file: ModelZoo never creates it
            f.unlink()
            continue
        np.random.seed(shuffle_seed + pid)
        index = np.arange(len(rows))
        np.random.shuffle(index)
        write_sample_file(f, rows[index])  # written under a temporary name, then renamed
