"""Nothing half-written: every output is written under a temporary name in its own directory and renamed
into place when complete, so a crash leaves either the old file or the new one, never a torn one.

One temporary-name convention: `.<name>.tmp-<pid>` (hidden, next to the target; `is_temp` recognises
it, and readers skip such names). One check of an output path before any work (`check_output`).
Torch-free, imports nothing from gptx_cli but errors.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from gptx_cli.errors import UsageError

TEMP_MARK = ".tmp-"


def temp_path(path: str | os.PathLike[str], tag: str | int | None = None) -> Path:
    """The temporary name for `path`: `.<name>.tmp-<tag>`, tag defaulting to this process's pid."""
    p = Path(path)
    return p.with_name(f".{p.name}{TEMP_MARK}{os.getpid() if tag is None else tag}")


def is_temp(path: str | os.PathLike[str]) -> bool:
    """True for a name written by `temp_path` (an unfinished or abandoned write)."""
    return TEMP_MARK in Path(path).name


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path to write `path`'s content to; renamed onto `path` when the block succeeds,
    removed when it fails. The parent directory is created."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(final)
    try:
        yield tmp
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | os.PathLike[str], data: Any, *, sort_keys: bool = False, **dumps: Any) -> Path:
    """`data` as indented JSON with a final newline."""
    return write_text(path, json.dumps(data, indent=2, sort_keys=sort_keys, **dumps) + "\n")


@contextmanager
def atomic_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a fresh temporary directory; when the block succeeds it replaces `path` (an existing `path` is
    swapped out first and then deleted), when it fails it is deleted."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(final)
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        yield tmp
        if final.exists():
            old = temp_path(final, f"old-{os.getpid()}")
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def check_output(
    path: str | os.PathLike[str],
    *,
    what: str,
    kind: Literal["file", "dir"],
    suffixes: Sequence[str] = (),
) -> Path:
    """Refuse, before any work, an output `path` that cannot be written: a file where a directory is
    expected (`kind="dir"`), a directory where a file is, a suffix not in `suffixes` (a file), or a place
    under a file or where nothing can be created (a read-only or virtual file system such as /proc).
    `what` names it in the message (a flag such as `--output-dir`). Creates nothing."""
    p = Path(path)
    if kind == "dir" and p.exists() and not p.is_dir():
        raise UsageError(f"{what} {p}: is a file, not a directory")
    if kind == "file":
        if p.is_dir():
            raise UsageError(f"{what} {p}: is a directory; give a file name")
        if suffixes and p.suffix.lower() not in suffixes:
            raise UsageError(
                f"{what} {p}: unknown file type {p.suffix or '(no extension)'!r}",
                hint=f"use one of {', '.join(suffixes)}",
            )
    probe_in = p if kind == "dir" else p.parent
    existing = probe_in
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f"{what} {p}: {existing} is a file, so nothing can be written under it")
    try:
        fd, probe = tempfile.mkstemp(dir=existing, prefix=f".gptx-write-check{TEMP_MARK}")
    except OSError as err:
        raise UsageError(f"{what} {p}: cannot write in {existing} ({err.strerror or err})") from None
    os.close(fd)
    os.unlink(probe)
    return p


def host_available_bytes() -> int | None:
    """The host's MemAvailable (/proc/meminfo), or None where it cannot be read."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def host_cores() -> int:
    """The CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1
