"""benchmarks/gpu/smoke_train.sh and trainer_slice.sh, the scripts that run on a lent GPU, run here on
the CPU (TARGET=CPU): the same commands, so the scripts are known to work before device time is spent
on them."""

from __future__ import annotations

import os
import re
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


def test_trainer_slice_script_runs_its_rows_on_the_cpu(tmp_path):
    env = {
        **os.environ,
        "TARGET": "CPU",
        "PYTHON": sys.executable,
        "OMP_NUM_THREADS": "1",
        "TMPDIR": str(tmp_path),
        "OUT": str(tmp_path / "out"),
        "XDG_CACHE_HOME": os.environ.get("XDG_CACHE_HOME", str(tmp_path / "cache")),
    }
    (tmp_path / "out").mkdir()
    proc = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu" / "trainer_slice.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert not re.search(r"row \d failed", out), out[-3000:]
    assert "| ratio loop / bare |" in out  # row 1: the loop against its bare step
    assert out.count("| `gptx train` loop |") == 2  # rows 1 and 2
    assert "error: --fp8: FP8 training needs an H100 or H200 GPU; this run is on cpu" in out  # row 3
    assert "bare Stepper call, same model and batch" in out  # row 4: the profile
    assert {p.name for p in (tmp_path / "out").iterdir()} == {"slice", "full", "trainer_profile.txt"}
    assert (tmp_path / "out" / "slice" / "bench_train.json").is_file()
