"""Issue #23 item 7: scripts/slurm/train.sbatch, run as written by bash, as a job of two "nodes" on
127.0.0.1. Stand-ins first on PATH emulate what the script uses of SLURM: `scontrol show hostnames`
(the node list: 127.0.0.1 per node), `srun` (one task per node with SLURM_NODEID, SLURM_PROCID and
SLURM_LOCALID set, its exit code the highest of the tasks') and `scontrol requeue` (recorded). The job
trains to the end; preempted (SIGUSR1 to every task, as SLURM's `--signal=USR1@90` sends it), it
checkpoints, gptx exits 75 and the script requeues the job, whose next start resumes. Waits are
bounded polls; nothing measures time."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from train_helpers import REPO, TEST_ENV, read_metrics, tiny_args

pytestmark = [pytest.mark.slow, pytest.mark.multiprocess]

SCRIPT = REPO / "scripts" / "slurm" / "train.sbatch"
JOB_ID = "4242"

SRUN = r"""#!/usr/bin/env bash
# srun stand-in: one task per "node" of the job, all on this machine; exit code: the tasks' highest.
set -u
while [ $# -gt 0 ] && [ "${1#--}" != "$1" ]; do echo "srun option $1" >> "$STANDIN_LOG"; shift; done
pids=()
for ((node = 0; node < SLURM_NNODES; node++)); do
  SLURM_NODEID=$node SLURM_PROCID=$node SLURM_LOCALID=0 "$@" &
  pids+=($!)
  echo "task $node pid $!" >> "$STANDIN_LOG"
done
code=0
for pid in "${pids[@]}"; do
  wait "$pid"; status=$?
  if [ "$status" -gt "$code" ]; then code=$status; fi
done
exit "$code"
"""

SCONTROL = r"""#!/usr/bin/env bash
# scontrol stand-in: the job's node names (every "node" is 127.0.0.1), and requeue recorded.
set -u
case "$1 ${2:-}" in
  "show hostnames") for ((node = 0; node < SLURM_NNODES; node++)); do echo 127.0.0.1; done ;;
  requeue*) echo "requeue $2" >> "$STANDIN_LOG" ;;
  *) echo "scontrol stand-in: unexpected arguments: $*" >&2; exit 2 ;;
esac
"""


def _free_port() -> int:  # the test's own pick; gptx itself never probes a port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def slurm(tmp_path) -> dict[str, Path]:
    """A bin dir with the stand-ins (and a `gptx` that runs this checkout's), and their log."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (
        ("srun", SRUN),
        ("scontrol", SCONTROL),
        ("gptx", f'#!/bin/sh\nexec "{sys.executable}" -m gptx_cli.cli "$@"\n'),
    ):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    return {"bin": bin_dir, "log": tmp_path / "standin.log"}


def _job(slurm: dict[str, Path], args: list[str]) -> subprocess.Popen:
    """`bash train.sbatch ARGS` as SLURM starts a 2-node batch job (sbatch reads the #SBATCH lines)."""
    env = {
        **os.environ,
        **TEST_ENV,
        "PATH": f"{slurm['bin']}{os.pathsep}{os.environ['PATH']}",
        "STANDIN_LOG": str(slurm["log"]),
        "SLURM_JOB_ID": JOB_ID,
        "SLURM_NNODES": "2",
        "SLURM_JOB_NODELIST": "node[0-1]",
        "NPROC": "1",
        "RDZV_PORT": str(_free_port()),
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("MASTER_ADDR", None)  # the script takes the first node of the node list
    return subprocess.Popen(
        ["bash", str(SCRIPT), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=env,
    )


def _log(slurm: dict[str, Path]) -> list[str]:
    return slurm["log"].read_text().splitlines() if slurm["log"].exists() else []


def test_the_sbatch_script_trains_on_two_nodes(tiny_data, slurm, tmp_path):
    model_dir = tmp_path / "job"
    job = _job(slurm, tiny_args(tiny_data, model_dir, "--max-steps", "4"))
    out, err = job.communicate(timeout=300)
    assert job.returncode == 0, err[-3000:]
    assert "training steps 0..4 on 2 x cpu (ddp)" in out, out[-3000:]
    log = _log(slurm)
    assert "srun option --kill-on-bad-exit=1" in log
    assert [line.split(" pid ")[0] for line in log if line.startswith("task ")] == ["task 0", "task 1"]
    assert not [line for line in log if line.startswith("requeue")]
    assert (model_dir / "checkpoint_4").is_dir()
    assert sorted(read_metrics(model_dir)) == [1, 2, 3, 4]


def test_a_preempted_job_checkpoints_requeues_itself_and_resumes(tiny_data, slurm, tmp_path):
    model_dir = tmp_path / "preempted"
    args = tiny_args(
        tiny_data, model_dir, "--set", "loop.max_steps=100000", "--set", "loop.eval_frequency=100000"
    )
    job = _job(slurm, args)
    metrics = model_dir / "metrics.jsonl"
    deadline = time.time() + 180
    while time.time() < deadline and job.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 3:
            break
        time.sleep(0.05)
    tasks = [int(line.rsplit(" ", 1)[1]) for line in _log(slurm) if line.startswith("task ")]
    assert job.poll() is None and len(tasks) == 2, job.communicate(timeout=60)[1][-3000:]
    for pid in tasks:  # SLURM's warning before preemption goes to every task of the step
        os.kill(pid, signal.SIGUSR1)
    out, err = job.communicate(timeout=180)
    assert job.returncode == 0, err[-3000:]  # the script requeued the job and exits 0
    assert f"requeue {JOB_ID}" in _log(slurm), _log(slurm)
    assert out.count("stopped by SIGUSR1 at step") == 1, out[-3000:]
    step = max(read_metrics(model_dir))
    assert (model_dir / f"checkpoint_{step}").is_dir()

    slurm["log"].unlink()  # the requeued job's next start
    again = _job(slurm, [*args, "--max-steps", str(step + 2)])
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err[-3000:]
    assert f"resuming from {model_dir / f'checkpoint_{step}'}" in out, out[-3000:]
    assert not [line for line in _log(slurm) if line.startswith("requeue")]
    assert max(read_metrics(model_dir)) == step + 2
