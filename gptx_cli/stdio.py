"""Console output that a closed reader cannot kill: `| head`, a dead `tee` or ssh pipe.

`protect_stdout()` replaces `sys.stdout` with a wrapper. The first write or flush that fails with EPIPE
points file descriptor 1 at /dev/null and drops the output: the console stops, the work goes on
(training keeps checkpointing and writing metrics.jsonl, which holds everything the console showed).
"""

from __future__ import annotations

import errno
import os
import sys
from typing import Any, TextIO


class _EpipeSafe:
    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self.closed_by_reader = False

    def _silence(self) -> None:
        self.closed_by_reader = True
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)
        except (OSError, ValueError):
            pass

    def _guard(self, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except BrokenPipeError:
            pass
        except OSError as err:
            if err.errno != errno.EPIPE:
                raise
        self._silence()
        try:  # the buffered text now goes to /dev/null
            return fn(*args)
        except OSError:
            return None

    def write(self, text: str) -> int:
        result = self._guard(self._stream.write, text)
        return len(text) if result is None else int(result)

    def flush(self) -> None:
        self._guard(self._stream.flush)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def protect_stdout() -> None:
    """Make `sys.stdout` EPIPE-safe (idempotent)."""
    if not isinstance(sys.stdout, _EpipeSafe) and sys.stdout is not None:
        sys.stdout = _EpipeSafe(sys.stdout)  # type: ignore[assignment]
