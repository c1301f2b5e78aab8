"""`--nproc 2` on CPU (gloo): DDP and FSDP2 reproduce one process's losses for the same global batch, and
checkpoints move between rank counts (1 -> 2 FSDP ranks -> 1)."""

from __future__ import annotations

import pytest
from train_helpers import read_metrics, run_gptx, tiny_args

pytestmark = pytest.mark.slow


def assert_same_losses(got: dict, reference: dict, steps: range) -> None:
    assert sorted(s for s in got if s in steps) == list(steps)
    for s in steps:
        assert got[s]["loss"] == pytest.approx(reference[s]["loss"], abs=1e-5), s


def test_ddp_two_processes_match_one_process(tiny_data, reference_run, tmp_path):
    model_dir = tmp_path / "ddp"
    r = run_gptx("train", *tiny_args(tiny_data, model_dir, "--nproc", "2", "--max-steps", "4"))
    assert r.returncode == 0, r.stderr
    assert "on 2 x cpu (ddp)" in r.stdout
    assert_same_losses(read_metrics(model_dir), read_metrics(reference_run), range(1, 5))


def test_fsdp_resumes_across_rank_counts_with_the_same_losses(tiny_data, reference_run, tmp_path):
    model_dir = tmp_path / "fsdp"
    # a checkpoint written by 1 process, continued by 2 FSDP2 ranks
    r = run_gptx(
        "train",
        *tiny_args(tiny_data, model_dir, "--nproc", "2", "--strategy", "fsdp", "--max-steps", "28"),
        "--checkpoint-path", str(reference_run / "checkpoint_25"),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "on 2 x cpu (fsdp)" in r.stdout
    assert (model_dir / "checkpoint_28" / "optim").is_dir()  # sharded optimizer state (DCP)
    reference = read_metrics(reference_run)
    assert_same_losses(read_metrics(model_dir), reference, range(26, 29))
    # ... and the 2-rank FSDP checkpoint continued by 1 process
    r = run_gptx("train", *tiny_args(tiny_data, model_dir, "--max-steps", "30"))
    assert r.returncode == 0, r.stderr
    assert "checkpoint_28" in r.stdout
    assert_same_losses(read_metrics(model_dir), reference, range(29, 31))
