"""The `--nproc` launcher's process supervision: start N ranks of `python <args>` with torchrun's
environment and watch them.

- The ranks die with the launcher: each asks the kernel for SIGKILL when its parent dies
  (`prctl(PR_SET_PDEATHSIG)`, set between fork and exec, then a check that the parent is still the
  launcher), so `kill -9` of the launcher leaves no rank behind holding the model_dir or the GPUs.
- The ranks run in a process group of their own: a terminal's Ctrl-C (SIGINT to the foreground group)
  reaches the launcher only, and the launcher forwards each SIGINT/SIGTERM it gets to every rank once.
  Each rank then saves at its next step boundary and exits 0, and so does the launcher.
- When a rank fails, the others are stopped (SIGTERM, then SIGKILL after a grace period) and the
  launcher exits with the failing rank's code.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from typing import Any

PR_SET_PDEATHSIG = 1
GRACE_SECONDS = 30.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent_hook() -> Any:
    """A preexec_fn for Popen: SIGKILL this child when the launcher dies (Linux); None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    prctl = libc.prctl
    parent = os.getpid()

    def hook() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the launcher died before the prctl took effect
            os._exit(1)
        os.setpgid(0, 0)

    return hook


def _start_new_group_hook() -> Any:
    return None if sys.platform.startswith("linux") else os.setpgrp  # noqa: PLW1509


def run_ranks(nproc: int, args: list[str]) -> int:
    """Run `sys.executable *args` as ranks 0..nproc-1 on this host; returns the exit code."""
    port = _free_port()
    hook = _die_with_parent_hook() or _start_new_group_hook()
    procs: list[subprocess.Popen[bytes]] = []
    forwarded: list[int] = []

    def forward(signum: int, _frame: Any) -> None:
        forwarded.append(signum)
        for p in procs:
            if p.poll() is None:
                try:
                    os.kill(p.pid, signum)
                except ProcessLookupError:
                    pass

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        for rank in range(nproc):
            env = {
                **os.environ,
                "RANK": str(rank),
                "LOCAL_RANK": str(rank),
                "WORLD_SIZE": str(nproc),
                "LOCAL_WORLD_SIZE": str(nproc),
                "GROUP_RANK": "0",
                "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": str(port),
                "TORCHELASTIC_RUN_ID": f"gptx-{os.getpid()}",
            }
            procs.append(subprocess.Popen([sys.executable, *args], env=env, preexec_fn=hook))  # noqa: PLW1509
        return _wait(procs)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _wait(procs: list[subprocess.Popen[bytes]]) -> int:
    """Wait for every rank; when one fails, stop the rest. Returns 0 or the first failing rank's code."""
    failed: int | None = None
    deadline: float | None = None
    while True:
        codes = [p.poll() for p in procs]
        if all(c is not None for c in codes):
            break
        if failed is None:
            bad = [c for c in codes if c is not None and c != 0]
            if bad:
                failed = bad[0]
                deadline = time.monotonic() + GRACE_SECONDS
                for p in procs:
                    if p.poll() is None:
                        p.terminate()
        elif deadline is not None and time.monotonic() > deadline:
            for p in procs:
                if p.poll() is None:
                    p.kill()
        time.sleep(0.05)
    if failed is None:
        failed = next((c for c in codes if c), None)
    if failed is None:
        return 0
    return failed if failed > 0 else 128 + (-failed)
