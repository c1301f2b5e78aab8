"""Tensors on disk: read lazily, write in bounded memory.

Reading: `open_tensors(path)` accepts a directory or a file, `.safetensors` or `.bin` (PyTorch pickle),
single or sharded with a `*.index.json`. Names, shapes and dtypes come from headers without loading
tensor data; `get(name)` loads one tensor. Safetensors files are read with positioned reads into a
fresh tensor instead of through a memory map: pages touched through a map count towards the process's
resident set until it is unmapped, so a map of a 24 GB file would make "peak RAM" the file size.

Writing: `ShardedSafetensorsWriter` keeps one shard in memory at a time and writes
`<prefix>-0000i-of-0000n.safetensors` + `<prefix>.safetensors.index.json` (or one
`<prefix>.safetensors`), each under a temporary name renamed when complete.

Any unreadable, truncated or malformed file raises `CheckpointError` naming the file.
"""

from __future__ import annotations

import json
import os
import re
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch

from gptx_cli.errors import CheckpointError, UsageError
from gptx_cli.fsutil import temp_path, write_json

SAFETENSORS_INDEX = "model.safetensors.index.json"
BIN_INDEX = "pytorch_model.bin.index.json"
# Preference order when a directory holds several formats (HF saves safetensors by default).
_SINGLE_FILES = ("model.safetensors", "pytorch_model.bin")

# safetensors dtype codes <-> torch dtypes (the format is little-endian, as is every host torch runs on).
_ST_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
}
_ST_CODES = {v: k for k, v in _ST_DTYPES.items()}
_MAX_HEADER = 100 * 1024 * 1024  # the reference implementation's limit


def dtype_name(dtype: torch.dtype) -> str:
    """'float32' for torch.float32."""
    return str(dtype).removeprefix("torch.")


def torch_dtype(name: str | None) -> torch.dtype | None:
    """torch.bfloat16 for 'bfloat16', 'torch.bfloat16' or 'bf16' (also fp16, fp32); None for None or
    a name that is not a torch dtype."""
    if name is None:
        return None
    name = name.removeprefix("torch.")
    found = getattr(torch, {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}.get(name, name), None)
    return found if isinstance(found, torch.dtype) else None


COMPUTE_DTYPES = ("float32", "bfloat16", "float16")  # what a model runs in, or a conversion casts to


def resolve_dtype(name: str, flag: str = "--dtype") -> torch.dtype:
    """The one dtype-name resolver for flags: float32, bfloat16 or float16 (also bf16, fp16, fp32 and
    `torch.`-prefixed names); anything else is a usage error naming `flag`."""
    dtype = torch_dtype(name)
    if dtype is None or dtype_name(dtype) not in COMPUTE_DTYPES:
        raise UsageError(f"{flag} {name!r}: choose one of {', '.join(COMPUTE_DTYPES)}")
    return dtype


def parse_size(text: str | int) -> int:
    """'5GB' -> 5_000_000_000, '500MiB' -> 524_288_000, '1000' -> 1000 (bytes), as HF's max_shard_size."""
    if isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*", text, flags=re.IGNORECASE)
    if not m:
        raise CheckpointError(f"invalid size {text!r}", hint="use e.g. 5GB, 500MB, 2GiB or a byte count")
    unit = (m.group(2) or "B").upper()
    mult = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}
    mult.update({"KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40})
    size = int(float(m.group(1)) * mult[unit])
    if size <= 0:
        raise CheckpointError(f"invalid size {text!r}: must be positive")
    return size


# --------------------------------------------------------------------------------------------- reading


class _SafetensorsFile:
    """One .safetensors file: header parsed eagerly (validated against the file size), data read on demand."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            size = path.stat().st_size
            with open(path, "rb") as f:
                raw_len = f.read(8)
                if len(raw_len) != 8:
                    raise CheckpointError(
                        f"{path}: corrupt safetensors file (shorter than its 8-byte header)"
                    )
                (header_len,) = struct.unpack("<Q", raw_len)
                if header_len > _MAX_HEADER or 8 + header_len > size:
                    raise CheckpointError(f"{path}: corrupt safetensors file (header length {header_len})")
                header = json.loads(f.read(header_len))
        except OSError as err:
            raise CheckpointError(f"{path}: cannot read: {err.strerror or err}") from err
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise CheckpointError(f"{path}: corrupt safetensors file (header is not JSON)") from err
        if not isinstance(header, dict):
            raise CheckpointError(f"{path}: corrupt safetensors file (header is not a JSON object)")
        self.metadata: dict[str, str] = header.pop("__metadata__", None) or {}
        self.data_start = 8 + header_len
        data_len = size - self.data_start
        self.entries: dict[str, tuple[torch.dtype, tuple[int, ...], int, int]] = {}
        for name, info in header.items():
            code = info.get("dtype") if isinstance(info, dict) else None
            if isinstance(code, str) and code not in _ST_DTYPES:
                raise CheckpointError(f"{path}: tensor {name!r} has dtype {code}, which gptx does not read")
            try:
                dtype = _ST_DTYPES[info["dtype"]]
                shape = tuple(int(d) for d in info["shape"])
                begin, end = (int(x) for x in info["data_offsets"])
            except (KeyError, TypeError, ValueError) as err:
                raise CheckpointError(
                    f"{path}: corrupt safetensors header entry for tensor {name!r}"
                ) from err
            numel = 1
            for d in shape:
                numel *= d
            if end - begin != numel * dtype.itemsize or begin < 0:
                raise CheckpointError(f"{path}: corrupt safetensors header: tensor {name!r} has bad offsets")
            if end > data_len:
                raise CheckpointError(
                    f"{path}: truncated safetensors file: tensor {name!r} ends at byte {self.data_start + end}"
                    f" but the file has {size} bytes"
                )
            self.entries[name] = (dtype, shape, begin, end)

    def get(self, name: str) -> torch.Tensor:
        dtype, shape, begin, end = self.entries[name]
        out = torch.empty(shape, dtype=dtype)
        if end > begin:
            buf = out.view(-1).view(torch.uint8).numpy()
            try:
                with open(self.path, "rb") as f:
                    f.seek(self.data_start + begin)
                    got = f.readinto(buf.data)
            except OSError as err:
                raise CheckpointError(f"{self.path}: cannot read tensor {name!r}: {err}") from err
            if got != end - begin:
                raise CheckpointError(f"{self.path}: truncated while reading tensor {name!r}")
        return out


class _TorchBinFile:
    """One PyTorch pickle (`pytorch_model.bin`), memory-mapped so tensors load when touched."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.metadata: dict[str, str] = {}
        try:
            try:
                obj = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
            except RuntimeError as err:
                if "mmap" not in str(err):
                    raise
                # Pre-1.6 (non-zip) pickles cannot be mapped; they load whole.
                obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # zipfile, pickle and unpickler errors all mean "corrupt"
            raise CheckpointError(
                f"{path}: corrupt or unreadable PyTorch file ({type(err).__name__}: {err})"
            ) from err
        if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
            obj = obj["state_dict"]
        if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
            raise CheckpointError(f"{path}: not a state dict of tensors")
        self.tensors: dict[str, torch.Tensor] = obj

    @property
    def entries(self) -> dict[str, torch.Tensor]:
        return self.tensors

    def get(self, name: str) -> torch.Tensor:
        try:
            return self.tensors[name].clone()  # read it now, detached from the map and from tied storages
        except RuntimeError as err:  # a map shorter than a tensor's storage
            raise CheckpointError(f"{self.path}: truncated while reading tensor {name!r}: {err}") from err


def _open_file(path: Path) -> _SafetensorsFile | _TorchBinFile:
    if not path.is_file():
        raise CheckpointError(f"{path}: weights file not found")
    if path.suffix == ".safetensors":
        return _SafetensorsFile(path)
    return _TorchBinFile(path)


class TensorSource:
    """Lazily read tensors from one file or a sharded set: keys, shapes and dtypes without loading data."""

    def __init__(self, files: list[Path], weight_map: dict[str, str] | None, origin: Path) -> None:
        self.origin = origin
        self.files = files
        self._open: dict[Path, _SafetensorsFile | _TorchBinFile] = {}
        self.metadata: dict[str, Any] = {}
        if weight_map is None:
            f = self._file(files[0])
            self._where = {name: files[0] for name in f.entries}
            self.metadata = dict(f.metadata)
        else:
            base = files[0].parent
            self._where = {name: base / fname for name, fname in weight_map.items()}
            for p in sorted(set(self._where.values())):
                if not p.is_file():
                    raise CheckpointError(f"{p}: shard named in {origin} is missing")

    def _file(self, path: Path) -> _SafetensorsFile | _TorchBinFile:
        f = self._open.get(path)
        if f is None:
            if any(isinstance(o, _TorchBinFile) for o in self._open.values()):
                self._open.clear()  # keep at most one mapped .bin shard
            f = self._open[path] = _open_file(path)
        return f

    def _entry(self, name: str) -> tuple[_SafetensorsFile | _TorchBinFile, Any]:
        path = self._where.get(name)
        if path is None:
            raise CheckpointError(f"{self.origin}: no tensor named {name!r}")
        f = self._file(path)
        if name not in f.entries:
            raise CheckpointError(f"{path}: tensor {name!r} is listed in the index but missing from the file")
        return f, f.entries[name]

    def keys(self) -> list[str]:
        return list(self._where)

    def file_of(self, name: str) -> Path:
        """The file holding `name` (the index or single file when unknown), for error messages."""
        return self._where.get(name, self.origin)

    def __contains__(self, name: object) -> bool:
        return name in self._where

    def __len__(self) -> int:
        return len(self._where)

    def shape(self, name: str) -> tuple[int, ...]:
        _, e = self._entry(name)
        return tuple(e.shape) if isinstance(e, torch.Tensor) else e[1]

    def dtype(self, name: str) -> torch.dtype:
        _, e = self._entry(name)
        return e.dtype if isinstance(e, torch.Tensor) else e[0]

    def get(self, name: str) -> torch.Tensor:
        f, _ = self._entry(name)
        return f.get(name)

    def items(self) -> Iterator[tuple[str, torch.Tensor]]:
        for name in self.keys():
            yield name, self.get(name)

    def close(self) -> None:
        self._open.clear()

    def __enter__(self) -> TensorSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def find_weights(path: str | Path) -> Path:
    """The weights entry point in a directory: an index file or a single weights file."""
    p = Path(path)
    if p.is_file():
        return p
    if not p.is_dir():
        raise CheckpointError(f"{p}: no such file or directory")
    for name in (SAFETENSORS_INDEX, *_SINGLE_FILES[:1], BIN_INDEX, *_SINGLE_FILES[1:]):
        if (p / name).is_file():
            return p / name
    indexes = sorted(p.glob("*.index.json"))
    if indexes:
        return indexes[0]
    singles = sorted(p.glob("*.safetensors")) + sorted(p.glob("*.bin"))
    if len(singles) == 1:
        return singles[0]
    raise CheckpointError(
        f"{p}: no weights found",
        hint="expected model.safetensors, pytorch_model.bin or a *.index.json with its shards",
    )


def open_tensors(path: str | Path) -> TensorSource:
    """Open a weights directory, a weights file or an `*.index.json` for lazy reading."""
    entry = find_weights(path)
    if entry.name.endswith(".index.json"):
        try:
            index = json.loads(entry.read_text())
            weight_map = index["weight_map"]
            if not isinstance(weight_map, dict) or not weight_map:
                raise TypeError("empty weight_map")
        except OSError as err:
            raise CheckpointError(f"{entry}: cannot read: {err.strerror or err}") from err
        except (ValueError, KeyError, TypeError) as err:
            raise CheckpointError(f"{entry}: corrupt index file (needs a non-empty 'weight_map')") from err
        files = sorted({entry.parent / fname for fname in weight_map.values()})
        src = TensorSource(files, {str(k): str(v) for k, v in weight_map.items()}, entry)
        src.metadata = dict(index.get("metadata") or {})
        return src
    return TensorSource([entry], None, entry)


# --------------------------------------------------------------------------------------------- writing


def _write_safetensors(path: Path, tensors: list[tuple[str, torch.Tensor]], metadata: dict[str, str]) -> None:
    """The safetensors layout: u64 header length, JSON header (space-padded to 8 bytes), raw data."""
    header: dict[str, Any] = {"__metadata__": metadata} if metadata else {}
    offset = 0
    for name, t in tensors:
        n = t.numel() * t.element_size()
        header[name] = {
            "dtype": _ST_CODES[t.dtype],
            "shape": list(t.shape),
            "data_offsets": [offset, offset + n],
        }
        offset += n
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for _, t in tensors:
            if t.numel():
                f.write(t.reshape(-1).view(torch.uint8).numpy().data)
        f.flush()
        os.fsync(f.fileno())


class ShardedSafetensorsWriter:
    """Stream tensors into size-bounded safetensors shards; only the current shard is held in memory.

    Usage: `with ShardedSafetensorsWriter(d, 5 * 10**9) as w: w.add(name, t)`; on a clean exit the
    shards are renamed to their final names (`model.safetensors` when there is only one) and the
    index written; on an exception the temporary files are removed.
    """

    def __init__(
        self,
        out_dir: str | Path,
        shard_size_bytes: int,
        prefix: str = "model",
        metadata: dict[str, str] | None = None,
    ) -> None:
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.shard_size = shard_size_bytes
        self.prefix = prefix
        self.metadata = {"format": "pt", **(metadata or {})}
        self._shard: list[tuple[str, torch.Tensor]] = []
        self._shard_bytes = 0
        self._tmp_files: list[Path] = []
        self._shard_keys: list[list[str]] = []
        self._seen: set[str] = set()
        self.total_bytes = 0
        self.num_tensors = 0
        self.num_params = 0
        self.written: list[Path] = []

    def add(self, name: str, tensor: torch.Tensor) -> None:
        if name in self._seen:
            raise CheckpointError(f"tensor {name!r} written twice")
        if tensor.dtype not in _ST_CODES:
            raise CheckpointError(f"tensor {name!r}: dtype {tensor.dtype} cannot be stored in safetensors")
        self._seen.add(name)
        t = tensor.detach().to("cpu").contiguous()
        nbytes = t.numel() * t.element_size()
        if t.untyped_storage().nbytes() > 2 * nbytes:
            t = t.clone()  # a small view must not keep a large base tensor alive while the shard fills
        if self._shard and self._shard_bytes + nbytes > self.shard_size:
            self._flush()
        self._shard.append((name, t))
        self._shard_bytes += nbytes
        self.total_bytes += nbytes
        self.num_tensors += 1
        self.num_params += t.numel()

    def add_all(self, items: Iterable[tuple[str, torch.Tensor]]) -> None:
        for name, t in items:
            self.add(name, t)

    def _flush(self) -> None:
        path = temp_path(self.out_dir / f"{self.prefix}-shard{len(self._tmp_files) + 1:05d}.safetensors")
        self._tmp_files.append(path)
        self._shard_keys.append([n for n, _ in self._shard])
        _write_safetensors(path, self._shard, self.metadata)
        self._shard = []
        self._shard_bytes = 0

    def close(self) -> list[Path]:
        """Finish: write the last shard, rename everything into place, return the final paths."""
        if self._shard or not self._tmp_files:
            self._flush()
        n = len(self._tmp_files)
        if n == 1:
            final = self.out_dir / f"{self.prefix}.safetensors"
            os.replace(self._tmp_files[0], final)
            self.written = [final]
            return self.written
        names = [f"{self.prefix}-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]
        weight_map = {key: fname for fname, keys in zip(names, self._shard_keys, strict=True) for key in keys}
        index = {"metadata": {"total_size": self.total_bytes}, "weight_map": weight_map}
        index_path = self.out_dir / f"{self.prefix}.safetensors.index.json"
        for tmp, fname in zip(self._tmp_files, names, strict=True):
            os.replace(tmp, self.out_dir / fname)
        write_json(index_path, index)  # last: a directory with an index is complete
        self.written = [self.out_dir / fname for fname in names] + [index_path]
        return self.written

    def abort(self) -> None:
        for p in self._tmp_files:
            p.unlink(missing_ok=True)
        self._shard = []

    def __enter__(self) -> ShardedSafetensorsWriter:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def save_tensors(
    out_dir: str | Path, items: Iterable[tuple[str, torch.Tensor]], shard_size_bytes: int = 5 * 10**9
) -> ShardedSafetensorsWriter:
    """Write all `items` to `out_dir` as (sharded) safetensors; returns the finished writer (for its counts)."""
    with ShardedSafetensorsWriter(out_dir, shard_size_bytes) as w:
        w.add_all(items)
    return w
