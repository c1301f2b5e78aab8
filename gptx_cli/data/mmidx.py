"""EleutherAI / Megatron indexed datasets (`.bin` + `.idx`, "MMIDIDX"), so gpt-neox users can bring or
take their data.

`.idx` layout (little endian), as written by Megatron-LM's and gpt-neox's `MMapIndexedDatasetBuilder`:

    9 bytes   b"MMIDIDX\\x00\\x00"
    u64       version (1)
    u8        dtype code (1 uint8, 2 int8, 3 int16, 4 int32, 5 int64, 6 float32/float, 7 float64, 8 uint16)
    u64       number of sequences (len(sizes))
    u64       len(doc_idx)
    i32[n]    sizes: tokens per sequence
    i64[n]    pointers: byte offset of each sequence in `.bin`
    i64[m]    doc_idx: sequence index where each document starts, then the total (here one sequence
              per document, so 0..n)

`.bin` is the sequences' tokens back to back in that dtype: uint16 when the vocabulary fits.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np

from gptx_cli.errors import DataError
from gptx_cli.fsutil import atomic_path, temp_path

MAGIC = b"MMIDIDX\x00\x00"
VERSION = 1
DTYPE_CODES: dict[int, type] = {
    1: np.uint8,
    2: np.int8,
    3: np.int16,
    4: np.int32,
    5: np.int64,
    6: np.float32,
    7: np.float64,
    8: np.uint16,
}
CODE_OF = {np.dtype(v): k for k, v in DTYPE_CODES.items()}


def best_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id fits (Megatron uses it below 65500), else int32."""
    return np.dtype(np.uint16) if vocab_size < 65500 else np.dtype(np.int32)


class MMIDIDXWriter:
    """Append documents to `<prefix>.bin`; `close()` writes `<prefix>.idx`. Both appear atomically."""

    def __init__(self, prefix: str | os.PathLike[str], dtype: np.dtype) -> None:
        self.prefix = Path(prefix)
        self.dtype = np.dtype(dtype)
        self._bin_tmp = temp_path(self.prefix.with_suffix(".bin"))
        self._bin = open(self._bin_tmp, "wb")  # noqa: SIM115 - closed in close()
        self._sizes: list[int] = []

    def add_document(self, tokens: np.ndarray) -> None:
        self._bin.write(np.asarray(tokens).astype(self.dtype, copy=False).tobytes(order="C"))
        self._sizes.append(len(tokens))

    def add_documents(self, tokens: np.ndarray, lengths: np.ndarray) -> None:
        self._bin.write(np.asarray(tokens).astype(self.dtype, copy=False).tobytes(order="C"))
        self._sizes.extend(int(x) for x in lengths)

    def close(self) -> None:
        self._bin.close()
        with atomic_path(self.prefix.with_suffix(".idx")) as idx_tmp:
            write_index(idx_tmp, self._sizes, self.dtype)
            os.replace(self._bin_tmp, self.prefix.with_suffix(".bin"))  # the .bin first, the .idx last


def write_index(path: str | os.PathLike[str], sizes: list[int], dtype: np.dtype) -> None:
    sizes_arr = np.asarray(sizes, dtype=np.int32)
    pointers = np.zeros(len(sizes_arr), dtype=np.int64)
    if len(sizes_arr):
        pointers[1:] = np.cumsum(sizes_arr[:-1].astype(np.int64) * np.dtype(dtype).itemsize)
    doc_idx = np.arange(len(sizes_arr) + 1, dtype=np.int64)
    with open(path, "wb") as f:
        f.write(MAGIC)
        f.write(struct.pack("<Q", VERSION))
        f.write(struct.pack("<B", CODE_OF[np.dtype(dtype)]))
        f.write(struct.pack("<Q", len(sizes_arr)))
        f.write(struct.pack("<Q", len(doc_idx)))
        f.write(sizes_arr.tobytes(order="C"))
        f.write(pointers.tobytes(order="C"))
        f.write(doc_idx.tobytes(order="C"))


class MMIDIDXReader:
    """Memory-mapped reader: `tokens` is the whole `.bin` as one 1-D array; `sizes`, `pointers`, `doc_idx`."""

    def __init__(self, prefix: str | os.PathLike[str]) -> None:
        prefix = Path(str(prefix).removesuffix(".idx").removesuffix(".bin"))
        idx_path, bin_path = prefix.with_suffix(".idx"), prefix.with_suffix(".bin")
        for p in (idx_path, bin_path):
            if not p.is_file():
                raise DataError(f"{p}: missing (an indexed dataset needs both .bin and .idx)")
        with open(idx_path, "rb") as f:
            head = f.read(9 + 8 + 1 + 8 + 8)
        if len(head) < 34 or head[:9] != MAGIC:
            raise DataError(f"{idx_path}: not an MMIDIDX index (bad magic)")
        (version,) = struct.unpack("<Q", head[9:17])
        (code,) = struct.unpack("<B", head[17:18])
        n, m = struct.unpack("<QQ", head[18:34])
        if version != VERSION or code not in DTYPE_CODES:
            raise DataError(f"{idx_path}: unsupported MMIDIDX version {version} or dtype code {code}")
        self.dtype = np.dtype(DTYPE_CODES[code])
        idx = np.memmap(idx_path, mode="r", dtype=np.uint8)
        off = 34
        self.sizes = np.frombuffer(idx, dtype=np.int32, count=n, offset=off)
        off += 4 * n
        self.pointers = np.frombuffer(idx, dtype=np.int64, count=n, offset=off)
        off += 8 * n
        self.doc_idx = np.frombuffer(idx, dtype=np.int64, count=m, offset=off)
        self.tokens = np.memmap(bin_path, mode="r", dtype=self.dtype)
        expected = int(self.sizes.astype(np.int64).sum())
        if len(self.tokens) != expected:
            raise DataError(f"{bin_path}: holds {len(self.tokens)} tokens but the index lists {expected}")

    def __len__(self) -> int:
        return len(self.sizes)

    def document(self, i: int) -> np.ndarray:
        start = int(self.pointers[i]) // self.dtype.itemsize
        return np.asarray(self.tokens[start : start + int(self.sizes[i])])
