"""benchmarks/gpu/smoke_train.sh, the script that runs the real CLI on a lent GPU, run here on the CPU
(TARGET=CPU): the same commands, so the script is known to work before device time is spent on it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from gptx_testing import REPO

pytestmark = pytest.mark.slow


def test_smoke_train_script_runs_every_command_on_the_cpu(tmp_path):
    env = {
        **os.environ,
        "TARGET": "CPU",
        "STEPS": "2",
        "PYTHON": sys.executable,
        "OMP_NUM_THREADS": "1",
        "TMPDIR": str(tmp_path),  # the script's work folder (mktemp -d) lands here
        "XDG_CACHE_HOME": os.environ.get("XDG_CACHE_HOME", str(tmp_path / "cache")),
    }
    proc = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu" / "smoke_train.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert out.count("training summary") == 3  # eager, resumed, compiled
    assert "resuming from run_eager/checkpoint_4" in out
    assert "train compiled:" in out
    assert "run_eager" in out and "lm_perplexity" in out  # gptx eval's table
    assert proc.stdout.rstrip().endswith("train")  # the final `ls run_eager` after gptx generate
