"""Issue #19: one writer per model_dir, --nproc supervision, clean multi-process stops, EPIPE-safe console,
leftovers of dead runs cleaned. Outcomes only: no test measures time (waits are bounded polls)."""

from __future__ import annotations

import fcntl
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from train_helpers import REPO, popen_env, read_metrics, run_gptx, tiny_args
from train_helpers import alive as _alive
from train_helpers import children as _children
from train_helpers import start as _start
from train_helpers import wait_for_steps as _wait_for_steps

pytestmark = pytest.mark.slow


def test_a_second_train_on_a_busy_model_dir_exits_1_naming_pid_and_host(tiny_data, tmp_path):
    """Problem 1: two trainers on one model_dir both ran. Exactly one runs; the other exits 1 at once."""
    model_dir = tmp_path / "two"
    first = _start(tiny_args(tiny_data, model_dir, "--max-steps", "100000"))
    try:
        _wait_for_steps(model_dir, first)
        second = run_gptx("train", *tiny_args(tiny_data, model_dir, "--set", "seed=7", "--max-steps", "3"))
        assert second.returncode == 1
        assert second.stderr.count("\n") == 1, second.stderr
        assert f"pid {first.pid} on host {socket.gethostname()}" in second.stderr
        assert "Traceback" not in second.stderr
        assert first.poll() is None  # the first one still runs
    finally:
        first.send_signal(signal.SIGTERM)
        out, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    lines = (model_dir / "metrics.jsonl").read_text().splitlines()
    assert not any('"seed": 7' in line for line in lines)
    steps = [r["step"] for r in map(__import__("json").loads, lines) if r["split"] == "train"]
    assert steps == list(range(1, len(steps) + 1))  # one writer: no step twice


def test_the_lock_is_an_os_lock_and_read_only_commands_ignore_it(tiny_data, reference_run, tmp_path):
    """A process holding the flock (here: this test) blocks train; generate on the same dir still runs."""
    lock = reference_run / ".gptx.lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
        busy = run_gptx("train", *tiny_args(tiny_data, reference_run, "--max-steps", "51"))
        assert busy.returncode == 1 and f"pid {os.getpid()}" in busy.stderr, busy.stderr
        gen = run_gptx(
            "generate", "--checkpoint-path", str(reference_run), "--prompt", "alpha", "--max-new-tokens", "2"
        )
        assert gen.returncode == 0, gen.stderr
    finally:
        os.ftruncate(fd, 0)
        os.close(fd)


def test_a_stale_lock_of_a_dead_process_is_taken_over_with_a_note(tiny_data, tmp_path):
    model_dir = tmp_path / "stale"
    model_dir.mkdir()
    (model_dir / ".gptx.lock").write_text("999999 deadhost\n")  # a kill -9'd holder: no flock held
    (model_dir / ".checkpoint_2.tmp-999999").mkdir()  # and its half-written checkpoint
    r = run_gptx("train", *tiny_args(tiny_data, model_dir, "--max-steps", "2"))
    assert r.returncode == 0, r.stderr
    assert "took over the lock of model_dir" in r.stdout and "pid 999999 on host deadhost" in r.stdout
    assert "removed" in r.stdout and ".checkpoint_2.tmp-999999" in r.stdout
    assert not (model_dir / ".checkpoint_2.tmp-999999").exists()
    assert (model_dir / "checkpoint_2").is_dir()


@pytest.mark.parametrize("where", ["file", "proc"])
def test_a_model_dir_that_cannot_be_a_directory_is_a_named_error(tiny_data, tmp_path, where):
    """Problem 10: a model_dir that is a file, or under /proc, was 'internal error'."""
    target = tmp_path / "plain_file" if where == "file" else Path("/proc/gptx-model-dir")
    if where == "file":
        target.write_text("x")
    r = run_gptx("train", *tiny_args(tiny_data, target, "--max-steps", "1"))
    assert r.returncode != 0
    assert r.stderr.startswith(f"error: model_dir {target}") and "internal error" not in r.stderr, r.stderr
    assert r.stderr.count("\n") == 1


@pytest.mark.multiprocess
def test_kill_9_of_the_nproc_launcher_leaves_no_rank_running(tiny_data, tmp_path):
    """Problem 3: ranks kept training after the launcher died. They get a parent-death SIGKILL."""
    model_dir = tmp_path / "orphans"
    launcher = _start(tiny_args(tiny_data, model_dir, "--max-steps", "100000", "--nproc", "2"))
    try:
        _wait_for_steps(model_dir, launcher)
        ranks = _children(launcher.pid)
        assert len(ranks) == 2
        launcher.kill()
        launcher.wait(timeout=30)
        deadline = time.time() + 30  # bounded wait; the assertion is on the outcome
        while time.time() < deadline and any(_alive(pid) for pid in ranks):
            time.sleep(0.05)
        assert not any(_alive(pid) for pid in ranks)
    finally:
        for pid in _children(launcher.pid):
            os.kill(pid, signal.SIGKILL)
    # the dead launcher's lock is free again: the same command resumes
    again = run_gptx("train", *tiny_args(tiny_data, model_dir, "--max-steps", "1"))
    assert "in use" not in again.stderr


@pytest.mark.multiprocess
def test_sigterm_under_nproc_2_saves_once_says_so_once_and_exits_0(tiny_data, tmp_path):
    """Problem 7: a stop under --nproc exited 1 and printed the stop message twice."""
    from gptx_cli.checkpoint import latest_checkpoint, read_checkpoint_meta

    model_dir = tmp_path / "stop2"
    args = tiny_args(
        tiny_data, model_dir, "--max-steps", "100000", "--nproc", "2", "--set", "loop.eval_frequency=100000"
    )
    launcher = _start(args)
    _wait_for_steps(model_dir, launcher)
    launcher.send_signal(signal.SIGTERM)
    out, err = launcher.communicate(timeout=180)
    assert launcher.returncode == 0, err
    assert out.count("stopped by SIGTERM at step") == 1, out
    assert err.count("stopped at step") == 1, err
    latest = latest_checkpoint(model_dir)
    assert latest is not None and read_checkpoint_meta(latest)["step"] == max(read_metrics(model_dir))


def test_a_closed_stdout_does_not_stop_training(tiny_data, tmp_path):
    """Problem 6: `gptx train ... | head -1` ended training with exit 1 and no checkpoint."""
    model_dir = tmp_path / "epipe"
    cmd = [
        sys.executable,
        "-m",
        "gptx_cli.cli",
        "train",
        *tiny_args(tiny_data, model_dir, "--max-steps", "12"),
    ]
    train = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO, env=popen_env())
    head = subprocess.run(["head", "-1"], stdin=train.stdout, capture_output=True, text=True)
    assert train.stdout is not None
    train.stdout.close()  # only head holds the read end, and head has exited
    _, err = train.communicate(timeout=300)
    assert head.stdout.startswith("note:") or head.stdout.startswith("training")
    assert train.returncode == 0, err
    assert err.decode() == ""
    assert sorted(read_metrics(model_dir)) == list(range(1, 13))  # the metrics file keeps everything
    assert (model_dir / "checkpoint_12").is_dir()


def test_train_refuses_preprocess_output_without_its_completion_marker(tiny_data, tmp_path):
    """Problem 2: a killed preprocess left data-*.h5 without data_params.json and train used part of it."""
    import shutil

    partial = tmp_path / "partial"
    shutil.copytree(tiny_data["train"], partial)
    (partial / "data_params.json").unlink()  # what a failed or SIGKILLed preprocess leaves
    args = tiny_args(
        tiny_data, tmp_path / "md", "--set", f"train_dataloader.data_dir={partial}", "--max-steps", "2"
    )
    r = run_gptx("train", *args)
    assert r.returncode == 1
    assert r.stderr.startswith(f"error: data_dir {partial} is incomplete: no data_params.json")
    assert "--resume" in r.stderr and r.stderr.count("\n") == 1
    assert not (tmp_path / "md").exists()
    anyway = run_gptx("train", *args, "--allow-incomplete")
    assert anyway.returncode == 0, anyway.stderr


def test_eval_does_not_overwrite_earlier_results_and_keeps_out_of_tensorboards_dir(
    tiny_data, reference_run, tmp_path
):
    """Problem 8 / papercut 6: eval wrote model_dir/eval/checkpoint_N.json (TensorBoard's eval dir), and
    an `--tasks` run replaced the earlier validation metrics."""
    import json
    import shutil

    model_dir = tmp_path / "evalrun"
    shutil.copytree(reference_run / "checkpoint_25", model_dir / "checkpoint_25")
    args = tiny_args(tiny_data, model_dir)
    args = ["eval", *args, "--checkpoint-path", str(model_dir / "checkpoint_25")]
    first = run_gptx(*args)
    assert first.returncode == 0, first.stderr
    result = model_dir / "eval_results" / "checkpoint_25.json"
    before = result.read_text()
    assert json.loads(before)["metrics"]["loss"] > 0
    assert not (model_dir / "eval").exists()
    again = run_gptx(*args)
    assert again.returncode == 2
    assert again.stderr.startswith(f"error: {result} already exists") and "--overwrite" in again.stderr
    assert result.read_text() == before
    assert run_gptx(*args, "--overwrite").returncode == 0


def test_a_checkpoint_write_that_runs_out_of_space_is_a_named_error(tiny_data, tmp_path):
    """Problem 10: a full disk during a checkpoint write was 'internal error: OSError'. The kernel's
    file-size limit (RLIMIT_FSIZE, SIGXFSZ ignored) makes the write fail as a full disk would: with an
    OSError from write(2) in the middle of the checkpoint."""
    import resource

    def limit_file_size() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))

    model_dir = tmp_path / "full"
    proc = subprocess.run(
        [sys.executable, "-m", "gptx_cli.cli", "train", *tiny_args(tiny_data, model_dir, "--max-steps", "2")],
        capture_output=True, text=True, cwd=REPO, env=popen_env(), preexec_fn=limit_file_size, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 1
    assert proc.stderr.startswith(
        f"error: {model_dir / 'checkpoint_2'}: cannot write the checkpoint: File too large"
    )
    assert proc.stderr.count("\n") == 1 and "internal error" not in proc.stderr
    assert not [p for p in model_dir.iterdir() if ".tmp-" in p.name]  # nothing half-written left


def test_rerunning_a_finished_run_says_already_at_max_steps(tiny_data, reference_run, tmp_path):
    """Papercut: a finished run re-run printed `steps 50 -> 50 ... last checkpoint -`."""
    import shutil

    model_dir = tmp_path / "done"
    model_dir.mkdir()
    shutil.copytree(reference_run / "checkpoint_50", model_dir / "checkpoint_50")
    r = run_gptx("train", *tiny_args(tiny_data, model_dir))
    assert r.returncode == 0, r.stderr
    assert "already at max_steps" in r.stdout and "nothing to train" in r.stdout
    assert "last checkpoint -" not in r.stdout
    assert not (model_dir / "metrics.jsonl").exists()
