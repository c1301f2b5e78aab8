"""Per-file checksums of a checkpoint's weight files (xxh3_64), recorded in gptx.json under "checksums"
and verified whenever the weights are opened: a flipped byte is a one-line error naming the file instead
of a silently different model. `--no-verify` (env GPTX_NO_VERIFY=1, which reaches --nproc ranks) skips
the check for people loading very large checkpoints repeatedly; docs/benchmarks.md has its cost.

Torch-free.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from gptx_cli.errors import CheckpointError

ALGORITHM = "xxh3_64"
ENV_NO_VERIFY = "GPTX_NO_VERIFY"
_CHUNK = 16 * 1024 * 1024


def file_checksum(path: str | os.PathLike[str]) -> str:
    """ "xxh3_64:<hex>" of a file's bytes, read in chunks."""
    import xxhash

    h = xxhash.xxh3_64()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return f"{ALGORITHM}:{h.hexdigest()}"


def weight_files(directory: Path) -> list[Path]:
    """The weight files of a checkpoint directory: safetensors shards and their index."""
    return sorted(
        p
        for p in directory.iterdir()
        if p.is_file() and (p.suffix == ".safetensors" or p.name.endswith(".index.json"))
    )


def checksums_of(directory: Path, files: Iterable[Path] | None = None) -> dict[str, str]:
    """{file name: checksum} for the weight files in `directory` (to record in gptx.json)."""
    return {p.name: file_checksum(p) for p in (weight_files(directory) if files is None else files)}


def skip_verification(enabled: bool = True) -> None:
    """What --no-verify does: this process and the ranks it launches skip the checksum check."""
    if enabled:
        os.environ[ENV_NO_VERIFY] = "1"


def verification_skipped() -> bool:
    return os.environ.get(ENV_NO_VERIFY, "") not in ("", "0")


def verify_checkpoint(directory: str | Path, meta: dict[str, Any]) -> None:
    """Check every file gptx.json records a checksum for; CheckpointError naming the first bad one.
    Checkpoints written before checksums were recorded have none and pass."""
    recorded = meta.get("checksums")
    if not recorded or verification_skipped():
        return
    root = Path(directory)
    if not isinstance(recorded, dict):
        raise CheckpointError(
            f"{root / 'gptx.json'}: corrupt checkpoint metadata ('checksums' is not a mapping)"
        )
    for name, expected in sorted(recorded.items()):
        path = root / name
        if not path.is_file():
            raise CheckpointError(f"{path}: weight file missing (gptx.json records a checksum for it)")
        algorithm = str(expected).split(":", 1)[0]
        if algorithm != ALGORITHM:
            raise CheckpointError(
                f"{root / 'gptx.json'}: unknown checksum algorithm {algorithm!r} for {name}"
            )
        actual = file_checksum(path)
        if actual != expected:
            raise CheckpointError(
                f"{path}: checksum mismatch, the file is corrupt (gptx.json records {expected}, the file has {actual})",
                hint="restore it from a copy, or pass --no-verify to load it anyway",
            )
