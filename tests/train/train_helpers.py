"""Helpers for the training tests: metrics reading, bounded process polls; the tiny-config CLI arguments
and the test data text live in gptx_testing.py (the docs test uses them too)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import gptx_testing
import pytest
from gptx_testing import WORDS, tiny_args, write_text  # noqa: F401 (used by the train tests)

REPO: Path = gptx_testing.REPO
# Tiny models run fastest on one thread; OpenMP threads only contend on a shared 2-core machine.
TEST_ENV = {"OMP_NUM_THREADS": "1"}


def run_gptx(*args: str, timeout: float = 300):
    """The real `gptx` CLI in a subprocess (tests/conftest.py's run_gptx) with TEST_ENV."""
    return gptx_testing.run_gptx(*args, env=TEST_ENV, timeout=timeout)


def popen_env() -> dict[str, str]:
    return {**os.environ, **TEST_ENV}


def read_metrics(model_dir: Path, split: str = "train") -> dict[int, dict]:
    lines = (model_dir / "metrics.jsonl").read_text().splitlines()
    return {r["step"]: r for r in map(json.loads, lines) if r["split"] == split}


# ---------------------------------------------------------------- running processes (bounded polls)


def start(args: list[str], **kw) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "gptx_cli.cli", "train", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=popen_env(), **kw,
    )  # fmt: skip


def wait_for_steps(model_dir: Path, proc: subprocess.Popen, n: int = 3) -> None:
    metrics = model_dir / "metrics.jsonl"
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= n:
            return
        time.sleep(0.05)
    out, err = proc.communicate(timeout=30) if proc.poll() is not None else ("", "")
    pytest.fail(f"training never logged {n} steps: {err[-2000:]}")


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
