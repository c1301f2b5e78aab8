"""Issue #23 item 6: checkpoints are written in the background. The test-only hook GPTX_TEST_HOLD_SAVE=DIR
(gptx_cli/train/checkpointer.py) holds the write of checkpoint N, after its weights and before its
train state, until the file DIR/N exists: training goes on while a save is held, what is written is
the state of the save's step, and a SIGKILL in the middle of a background save leaves the previous
checkpoint intact and nothing of the new one visible; the resume completes and equals an uninterrupted
run. Waits are bounded polls on files and output lines; nothing measures time."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from train_helpers import REPO, popen_env, run_gptx, tiny_args

from gptx_cli.checkpoint import latest_checkpoint, list_checkpoints, read_checkpoint_meta
from gptx_cli.checksum import verify_checkpoint
from gptx_cli.train.state import read_train_state

pytestmark = pytest.mark.slow

RUN = ["--set", "checkpoint.steps=5", "--set", "loop.eval_frequency=100000", "--max-steps", "20"]
STEPS = [5, 10, 15, 20]


class Run:
    """`gptx train` in a subprocess whose stdout lines are read as they come (a reader thread)."""

    def __init__(self, args: list[str], hold: Path) -> None:
        env = {**popen_env(), "GPTX_TEST_HOLD_SAVE": str(hold), "PYTHONUNBUFFERED": "1"}
        cmd = [sys.executable, "-m", "gptx_cli.cli", "train", *args]
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=env
        )
        self.lines: list[str] = []
        self.stderr: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._readers = [
            threading.Thread(target=self._read, daemon=True),
            threading.Thread(target=self._errors, daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def _errors(self) -> None:
        assert self.proc.stderr is not None
        self.stderr.extend(self.proc.stderr)

    def read_until(self, start: str, timeout: float = 180) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                line = self._queue.get(timeout=1)
            except queue.Empty:
                continue
            if line is None:
                break
            self.lines.append(line)
            if line.startswith(start):
                return
        self.kill()
        pytest.fail(f"no line starting {start!r}; stdout:\n" + "\n".join(self.lines[-40:]))

    def finish(self, timeout: float = 180) -> str:
        self.proc.wait(timeout=timeout)
        while (line := self._queue.get(timeout=30)) is not None:
            self.lines.append(line)
        self._readers[1].join(timeout=30)
        return "".join(self.stderr)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=60)


def _temp_checkpoints(model_dir: Path, step: int) -> list[Path]:
    return [p for p in model_dir.glob(f".checkpoint_{step}.tmp-*") if (p / "gptx.json").is_file()]


def _same_checkpoint(a: Path, b: Path) -> None:
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert sorted(wa) == sorted(wb) and all(torch.equal(wa[k], wb[k]) for k in wb), (a, b)
    sa, sb = read_train_state(a), read_train_state(b)
    assert (sa["step"], sa["samples_seen"], sa["scheduler"]) == (
        sb["step"],
        sb["samples_seen"],
        sb["scheduler"],
    )
    oa, ob = sa["optimizer"]["state"], sb["optimizer"]["state"]
    assert sorted(oa) == sorted(ob)
    for name in ob:
        assert sorted(oa[name]) == sorted(ob[name])
        assert all(torch.equal(oa[name][k], ob[name][k]) for k in ob[name]), name


@pytest.fixture(scope="module")
def sync_run(tiny_data, tmp_path_factory) -> tuple[Path, list[str]]:
    """The same 20 steps with --sync-checkpoints: the reference, and the synchronous order of lines."""
    model_dir = tmp_path_factory.mktemp("async_ckpt") / "sync"
    r = run_gptx("train", *tiny_args(tiny_data, model_dir, *RUN, "--sync-checkpoints"))
    assert r.returncode == 0, r.stderr
    return model_dir, r.stdout.splitlines()


def test_a_synchronous_save_is_written_before_the_next_step(sync_run):
    model_dir, lines = sync_run
    saved = next(i for i, ln in enumerate(lines) if ln.startswith(f"saved {model_dir / 'checkpoint_5'} ("))
    assert saved < next(i for i, ln in enumerate(lines) if ln.startswith("train step 6/20"))
    assert "in the background" not in lines[saved]
    assert [s for s, _ in list_checkpoints(model_dir)] == STEPS


def test_training_goes_on_while_a_checkpoint_is_written(tiny_data, sync_run, tmp_path):
    hold = tmp_path / "hold"
    hold.mkdir()
    for step in STEPS[1:]:
        (hold / str(step)).touch()  # only checkpoint_5 is held
    model_dir = tmp_path / "async"
    run = Run(tiny_args(tiny_data, model_dir, *RUN), hold)
    try:
        run.read_until("train step 8/20")  # three steps after the save at step 5 began
        assert not (model_dir / "checkpoint_5").exists(), "checkpoint_5 visible before its write completed"
        # the writer thread reaches the hold on its own schedule (on a loaded machine after step 8)
        deadline = time.monotonic() + 120
        while not _temp_checkpoints(model_dir, 5) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _temp_checkpoints(model_dir, 5), (
            "the held write of checkpoint_5 is not under its temporary name"
        )
        assert not (model_dir / "checkpoint_5").exists(), "checkpoint_5 visible before its write completed"
        assert not any(line.startswith("saved ") for line in run.lines)
        (hold / "5").touch()
        err = run.finish()
    finally:
        run.kill()
    assert run.proc.returncode == 0, err[-3000:]
    lines = run.lines
    saved = next(i for i, ln in enumerate(lines) if ln.startswith(f"saved {model_dir / 'checkpoint_5'} ("))
    assert lines[saved].endswith(", written in the background)")
    assert next(i for i, ln in enumerate(lines) if ln.startswith("train step 8/20")) < saved
    assert [s for s, _ in list_checkpoints(model_dir)] == STEPS
    assert not list(model_dir.glob(".*.tmp-*"))
    # What was written is the state of step 5, not of the steps that ran while the write was held.
    reference = sync_run[0]
    for step in STEPS:
        _same_checkpoint(model_dir / f"checkpoint_{step}", reference / f"checkpoint_{step}")
    assert "last checkpoint  " + str(model_dir / "checkpoint_20") in "\n".join(lines)


def test_a_kill_during_a_background_save_keeps_the_previous_checkpoint_and_resume_completes(
    tiny_data, sync_run, tmp_path
):
    hold = tmp_path / "hold"
    hold.mkdir()
    (hold / "5").touch()  # checkpoint_5 is written; checkpoint_10 is held in the middle of its write
    model_dir = tmp_path / "killed"
    args = tiny_args(tiny_data, model_dir, *RUN)
    run = Run(args, hold)
    try:
        run.read_until(f"saved {model_dir / 'checkpoint_5'} (")
        run.read_until("train step 12/20")  # the save at step 10 is in flight
        assert _temp_checkpoints(model_dir, 10), "checkpoint_10 is not being written"
    finally:
        run.kill()  # SIGKILL while checkpoint_10 is held between its weights and its train state
    assert run.proc.returncode == -signal.SIGKILL
    assert latest_checkpoint(model_dir) == model_dir / "checkpoint_5"
    assert not (model_dir / "checkpoint_10").exists()
    partial = _temp_checkpoints(model_dir, 10)  # weights and gptx.json, no train state: never loaded
    assert partial and not (partial[0] / "train_state.pt").exists()
    ckpt = model_dir / "checkpoint_5"
    verify_checkpoint(ckpt, read_checkpoint_meta(ckpt))  # raises on a checksum mismatch
    assert read_train_state(ckpt)["step"] == 5
    _same_checkpoint(ckpt, sync_run[0] / "checkpoint_5")

    again = run_gptx("train", *args)
    assert again.returncode == 0, again.stderr
    assert f"autoload_last_checkpoint: resuming from {ckpt}" in again.stdout
    assert f"note: removed {partial[0]}, left by a run that did not finish writing it" in again.stdout
    assert [s for s, _ in list_checkpoints(model_dir)] == STEPS
    assert not list(model_dir.glob(".*.tmp-*"))
    _same_checkpoint(model_dir / "checkpoint_20", sync_run[0] / "checkpoint_20")  # as if never killed


def _dcp_tensors(optim_dir: Path, tmp: Path) -> dict[str, torch.Tensor]:
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    out = tmp / f"{optim_dir.parent.parent.name}.pt"
    dcp_to_torch_save(optim_dir, out)
    flat: dict[str, torch.Tensor] = {}

    def walk(value: object, prefix: str) -> None:
        if isinstance(value, torch.Tensor):
            flat[prefix] = value
        elif isinstance(value, dict):
            for k, v in value.items():
                walk(v, f"{prefix}.{k}")

    walk(torch.load(out, weights_only=False), "")
    return flat


@pytest.mark.multiprocess
def test_fsdp_background_save_writes_the_state_of_its_step(tiny_data, tmp_path):
    """Under FSDP2 the optimizer shards go through DCP's async_save on a process group of its own while
    the ranks keep training; checkpoint_5, held until step 8, equals a synchronous run's bit for bit."""
    fsdp = ["--nproc", "2", "--strategy", "fsdp", "--set", "checkpoint.steps=5", "--max-steps", "10"]
    fsdp += ["--set", "loop.eval_frequency=100000"]
    sync = tmp_path / "sync"
    r = run_gptx("train", *tiny_args(tiny_data, sync, *fsdp, "--sync-checkpoints"))
    assert r.returncode == 0, r.stderr
    hold = tmp_path / "hold"
    hold.mkdir()
    (hold / "10").touch()
    model_dir = tmp_path / "async"
    run = Run(tiny_args(tiny_data, model_dir, *fsdp), hold)
    try:
        run.read_until("train step 8/10")
        assert not (model_dir / "checkpoint_5").exists()
        (hold / "5").touch()
        err = run.finish()
    finally:
        run.kill()
    assert run.proc.returncode == 0, err[-3000:]
    assert "UserWarning" not in err, err[-3000:]
    for step in (5, 10):
        a, b = model_dir / f"checkpoint_{step}", sync / f"checkpoint_{step}"
        wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
        assert sorted(wa) == sorted(wb) and all(torch.equal(wa[k], wb[k]) for k in wb), step
        oa, ob = _dcp_tensors(a / "optim", tmp_path), _dcp_tensors(b / "optim", tmp_path)
        assert sorted(oa) == sorted(ob) and oa, step
        assert all(torch.equal(oa[k], ob[k]) for k in ob), step
