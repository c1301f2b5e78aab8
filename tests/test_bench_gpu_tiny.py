"""The GPU benchmark's --tiny mode: the same code path as on an H100/H200, at toy size on the CPU.

These runs are what keeps benchmarks/gpu/ ready to run on a lent GPU machine; the timings they print
mean nothing (the numbers that count come from a GPU run, recorded in docs/benchmarks.md).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RUN_SH = REPO / "benchmarks" / "gpu" / "run.sh"
BENCH = REPO / "benchmarks" / "gpu" / "bench_gpu.py"
TINY_VOCAB = 512  # bench_gpu.TINY_OVERRIDES: random tokens over it give a loss near ln(512) at init

ALL_CASES = [
    "gptj-train-gptx",
    "gptj-train-gptx-compile",
    "gptj-train-hf-ckpt",
    "gptj-eval-gptx",
    "gptj-eval-hf",
    "gptj-eval-gptx-compile",
    "gptj-train-gptx-compile-full",
    "gptj-train-gptx-ckpt-full",
    "gptj-train-hf-ckpt-full",
    "neox-train-gptx",
    "neox-train-gptx-compile",
    "neox-train-hf",
    "gptj-train-gptx-torchadamw",
]
# Run only when the memory fit cut the GPT-J training rows short of all layers.
FULL_DEPTH = [c for c in ALL_CASES if c.endswith("-full")]


def _env(out: Path) -> dict[str, str]:
    env = dict(os.environ)
    # run.sh must find gptx through PYTHONPATH alone, as on a GPU box where gptx is not installed.
    env.pop("PYTHONPATH", None)
    env.update({"OUT": str(out), "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"})
    return env


def run_bench(out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """bench_gpu.py --tiny --out OUT ARGS..., checked to exit 0."""
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--tiny", "--out", str(out), *args],
        env=_env(out),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_tiny_run_prints_the_table_and_writes_json_for_every_case(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run(
        ["bash", str(RUN_SH), "--tiny", "--peak-tflops", "2.5"],
        cwd=tmp_path,
        env=_env(out),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "torch " in proc.stdout and "transformers " in proc.stdout  # run.sh's version header

    report = json.loads((out / "gpu_bench.json").read_text())
    table = (out / "gpu_bench.txt").read_text()
    assert table in proc.stdout  # the printed report and the saved one are the same text
    assert report["format"] == "gptx-gpu-bench" and report["tiny"] is True
    assert report["env"]["torch"] and report["env"]["transformers"]
    assert report["env"]["bf16_peak_tflops"] == 2.5

    rows = {r["case"]: r for r in report["cases"]}
    assert list(rows) == ALL_CASES
    for key in FULL_DEPTH:  # the toy model fits: nothing to run at full depth separately
        row = rows.pop(key)
        assert row["status"] == "skipped" and "already run at full depth" in row["detail"]
    for key, row in rows.items():
        assert row["status"] == "ok", (key, row.get("detail"), row.get("traceback"))
        assert key in table and row["model"] in table
        assert len(row["step_s"]) == report["settings"]["steps"] == 2
        assert row["tokens_per_s"] == row["batch"] * row["seq"] / row["mean_step_s"]
        # MFU is achieved FLOP/s over the given peak; eval counts a third of the training FLOPs.
        assert math.isclose(row["mfu"], row["tokens_per_s"] * row["flops_per_token"] / 2.5e12)
        # Both implementations really ran the model: random tokens, fresh weights -> loss near ln(vocab).
        assert all(abs(loss - math.log(TINY_VOCAB)) < 0.3 for loss in row["losses"]), (key, row["losses"])
        assert row["peak_mem_gib"] is None  # not measured on the CPU
    assert rows["gptj-train-gptx"]["flops_per_token"] == 3 * rows["gptj-eval-gptx"]["flops_per_token"]
    assert rows["gptj-train-gptx-compile"]["compile_backend"] == "aot_eager"
    assert rows["gptj-train-hf-ckpt"]["activation_checkpointing"] is True
    assert rows["gptj-train-hf-ckpt"]["params"] == rows["gptj-train-gptx"]["params"]  # the same model
    summary = report["summary"]
    assert summary["gptj_train_speedup_vs_hf"] > 0 and summary["gptj_eval_speedup_vs_hf"] > 0
    assert set(summary["targets"]) == {"train_mfu_ge_55pct", "train_ge_2x_hf", "eval_ge_2x_hf"}


def test_a_failing_case_is_recorded_and_the_run_goes_on(tmp_path: Path) -> None:
    # A compile backend torch does not know makes the compiled case fail for real; the other case runs.
    proc = run_bench(
        tmp_path, "--cases", "gptj-eval-gptx-compile,gptj-eval-gptx", "--compile-backend", "no_such_backend"
    )
    rows = {r["case"]: r for r in json.loads((tmp_path / "gpu_bench.json").read_text())["cases"]}
    assert list(rows) == ["gptj-eval-gptx", "gptj-eval-gptx-compile"]  # the run's priority order
    failed, ok = rows["gptj-eval-gptx-compile"], rows["gptj-eval-gptx"]
    assert failed["status"] == "error" and "no_such_backend" in failed["detail"]
    assert ok["status"] == "ok" and ok["tokens_per_s"] > 0
    assert "gptj-eval-gptx-compile  " in proc.stdout and " error " in proc.stdout


def test_cases_past_the_time_budget_are_skipped_not_run(tmp_path: Path) -> None:
    run_bench(tmp_path, "--time-budget", "0")
    rows = json.loads((tmp_path / "gpu_bench.json").read_text())["cases"]
    assert [r["case"] for r in rows] == ALL_CASES
    assert all(r["status"] == "skipped" for r in rows)
    assert all(r["detail"].startswith("time budget") for r in rows if r["case"] not in FULL_DEPTH)


def test_full_depth_rows_run_when_the_training_rows_are_cut_short(tmp_path: Path) -> None:
    # --layers 1 stands in for a card that holds only part of the model (the memory fit's answer).
    cases = ["gptj-train-gptx", "gptj-train-hf-ckpt", *FULL_DEPTH]
    run_bench(tmp_path, "--layers", "1", "--cases", ",".join(cases))
    report = json.loads((tmp_path / "gpu_bench.json").read_text())
    rows = {r["case"]: r for r in report["cases"]}
    assert list(rows) == cases
    assert all(r["status"] == "ok" for r in rows.values()), [r.get("detail") for r in rows.values()]
    assert rows["gptj-train-gptx"]["layers"] == 1
    assert all(rows[key]["layers"] == 2 for key in FULL_DEPTH)
    assert rows["gptj-train-gptx-ckpt-full"]["activation_checkpointing"] is True
    # The summary compares like with like: the deepest layer count where both gptx and HF ran.
    summary = report["summary"]
    assert summary["gptj_train_layers"] == 2
    best = rows[summary["gptj_train_best_gptx"]]
    assert best["layers"] == 2 and best["impl"] == "gptx"
    assert summary["gptj_train_hf_tokens_per_s"] == rows["gptj-train-hf-ckpt-full"]["tokens_per_s"]


def test_run_sh_runs_the_repositorys_venv_python_by_default(tmp_path: Path) -> None:
    """docs/gpu.md: after `make demo`, `bash benchmarks/gpu/run.sh --tiny` (no PYTHON=) uses .venv/bin/python.
    A copy of run.sh in a scratch repository whose .venv/bin/python is a stand-in that says it ran."""
    script = tmp_path / "benchmarks" / "gpu" / "run.sh"
    script.parent.mkdir(parents=True)
    script.write_bytes(RUN_SH.read_bytes())
    venv_python = tmp_path / ".venv" / "bin" / "python"
    venv_python.parent.mkdir(parents=True)
    venv_python.write_text('#!/bin/sh\necho "venv python: $*"\n')
    venv_python.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "PYTHON"}
    proc = subprocess.run(
        ["bash", str(script), "--tiny"], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert f"venv python: {script.parent / 'bench_gpu.py'} --tiny" in proc.stdout
