"""One writer per model_dir: an exclusive OS file lock (`flock`) on `<model_dir>/.gptx.lock`.

`gptx train` and `gptx continue-pretrain` hold it for their whole run; with `--nproc` the launcher
takes it before it starts the ranks and tells them through `GPTX_MODEL_DIR_LOCK` that it holds it for
them (the ranks die with the launcher, see `parallel.launch`). The kernel releases the lock when its
holder exits in any way, kill -9 included, so a lock file left by a dead process is simply taken over
(with a note). Read-only users (eval, generate, convert, report) never take it.

The file records "pid host" of the holder, so a second writer fails at once naming them.
"""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from gptx_cli.errors import UsageError
from gptx_cli.fsutil import is_temp

LOCK_FILE = ".gptx.lock"
ENV = "GPTX_MODEL_DIR_LOCK"  # "<resolved model_dir>" when a launcher holds the lock for its ranks


class ModelDirBusy(UsageError):
    """Another live process holds the model_dir lock (exit 1)."""

    exit_code = 1


def _describe(holder: str) -> str:
    parts = holder.split()
    if len(parts) >= 2 and parts[0].isdigit():
        return f"pid {parts[0]} on host {parts[1]}"
    return "another process"


def _first_missing(path: Path) -> Path | None:
    """The outermost directory of `path` that does not exist yet (None: `path` exists)."""
    missing = None
    for p in [path, *path.parents]:
        if p.exists():
            break
        missing = p
    return missing


def prepare_model_dir(model_dir: str | Path) -> Path:
    """Create model_dir (and parents); a path that cannot be a directory is a one-line error."""
    path = Path(model_dir)
    if path.exists() and not path.is_dir():
        raise UsageError(f"model_dir {path} is a file, not a directory", hint="choose another --model-dir")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".gptx-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise UsageError(
            f"model_dir {path} cannot be written: {err.strerror or err}", hint="choose another --model-dir"
        ) from None
    return path


@contextmanager
def model_dir_lock(model_dir: str | Path, note: Callable[[str], None] = print) -> Iterator[None]:
    """Hold the exclusive lock on `model_dir` for the body; ModelDirBusy at once if another process has it."""
    import fcntl

    created = _first_missing(Path(model_dir).absolute())
    path = prepare_model_dir(model_dir)
    resolved = str(path.resolve())
    if os.environ.get(ENV) == resolved and "LOCAL_RANK" in os.environ:
        yield  # a rank of a launcher that holds the lock for it
        return
    lock_path = path / LOCK_FILE
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 256, 0).decode(errors="replace").strip()
            raise ModelDirBusy(
                f"model_dir {path} is in use by another gptx run ({_describe(holder)})",
                hint="wait for it to finish, stop it, or use another --model-dir",
            ) from None
        previous = os.pread(fd, 256, 0).decode(errors="replace").strip()
        if previous:
            note(
                f"note: took over the lock of model_dir {path} left by {_describe(previous)}, which has exited"
            )
        clean_leftovers(path, note)
        me = f"{os.getpid()} {socket.gethostname()}\n".encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, me, 0)
        old_env = os.environ.get(ENV)
        os.environ[ENV] = resolved  # ranks this process launches share the lock
        try:
            yield
        finally:
            if old_env is None:
                os.environ.pop(ENV, None)
            else:
                os.environ[ENV] = old_env
            os.ftruncate(fd, 0)  # a clean exit leaves no holder to report
    finally:
        os.close(fd)  # releases the flock
        if created is not None and [p.name for p in path.iterdir()] == [LOCK_FILE]:
            _remove_empty(path, created)  # a run refused before it wrote anything leaves no directory


def _remove_empty(path: Path, top: Path) -> None:
    try:
        (path / LOCK_FILE).unlink()
        for p in [path.absolute(), *path.absolute().parents]:
            p.rmdir()
            if p == top:
                break
    except OSError:
        pass


def clean_leftovers(model_dir: Path, note: Callable[[str], None] = print) -> None:
    """Remove the temporaries (`.checkpoint_N.tmp-PID`, ...) a dead run left in model_dir. Called only
    under the lock, so no live process owns them."""
    for child in sorted(model_dir.iterdir()):
        if is_temp(child) or ".old-" in child.name:
            if child.is_dir():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)
            note(f"note: removed {child}, left by a run that did not finish writing it")
