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


def test_fsdp_matches_one_process_and_resumes_across_rank_counts(tiny_data, reference_run, tmp_path):
    model_dir = tmp_path / "fsdp"
    fsdp = ("--nproc", "2", "--strategy", "fsdp")
    reference = read_metrics(reference_run)
    # steps 1-2 on 2 FSDP2 ranks from scratch
    r = run_gptx("train", *tiny_args(tiny_data, model_dir, *fsdp, "--max-steps", "2"))
    assert r.returncode == 0, r.stderr
    assert "on 2 x cpu (fsdp)" in r.stdout
    assert (model_dir / "checkpoint_2" / "optim").is_dir()  # sharded optimizer state (DCP)
    assert_same_losses(read_metrics(model_dir), reference, range(1, 3))
    # steps 3-4 on 1 process from the 2-rank checkpoint
    r = run_gptx("train", *tiny_args(tiny_data, model_dir, "--max-steps", "4"))
    assert r.returncode == 0, r.stderr
    assert "resuming from" in r.stdout and "checkpoint_2" in r.stdout
    assert_same_losses(read_metrics(model_dir), reference, range(3, 5))
    # steps 5-6 on 2 FSDP2 ranks from the 1-process checkpoint (full optimizer state, sharded on load)
    r = run_gptx(
        "train", *tiny_args(tiny_data, model_dir, *fsdp, "--max-steps", "6"),
        "--checkpoint-path", str(model_dir / "checkpoint_4"),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert_same_losses(read_metrics(model_dir), reference, range(5, 7))
