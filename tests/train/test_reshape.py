"""Issue #23: resuming on another shape. A checkpoint written by N processes under DDP or FSDP2 (or by one
process) resumes on M processes under either strategy and continues the uninterrupted single-process
run (conftest's `reference_run`: 50 steps, checkpoints at 25 and 50): the same per-step losses after
the resume, the same eval loss and the same final weights, within 1e-4 in fp32. The data loader's
position is the global sample position in train_state.pt (world-size independent), so the next samples
are the same. A process count that does not divide the global batch is refused in one line before any
rank starts. gloo on CPU; the first halves are shared between the cases."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from train_helpers import read_metrics, run_gptx, tiny_args

pytestmark = pytest.mark.slow

HALF, END = 25, 50  # the reference run's checkpoint steps (tiny_gptj.yaml: checkpoint.steps 25, max_steps 50)
GLOBAL_BATCH = 8  # tiny_gptj.yaml's train_dataloader.batch_size
TOL = 1e-4  # the bound in fp32 (DDP / FSDP2 sum in another order than one process)

SHAPES: dict[str, tuple[str, ...]] = {
    "one": (),
    "ddp2": ("--nproc", "2", "--strategy", "ddp"),
    "fsdp2": ("--nproc", "2", "--strategy", "fsdp"),
    "fsdp4": ("--nproc", "4", "--strategy", "fsdp"),
}
WORLD = {"one": 1, "ddp2": 2, "fsdp2": 2, "fsdp4": 4}

# (written by, resumed on); cases that share a first half are adjacent
CASES = [
    ("one", "ddp2"),  # 1 -> 2
    ("ddp2", "one"),  # 2 -> 1
    ("ddp2", "fsdp2"),  # DDP -> FSDP2: a full optimizer state sharded on load
    ("fsdp2", "fsdp4"),  # 2 -> 4: DCP reshards the optimizer state
    ("fsdp2", "ddp2"),  # FSDP2 -> DDP: DCP shards loaded whole on every rank
]


def train_state(checkpoint: Path) -> dict:
    return torch.load(checkpoint / "train_state.pt", map_location="cpu", weights_only=False)


@pytest.fixture(scope="module")
def first_half(tiny_data, reference_run, tmp_path_factory) -> Callable[[str], Path]:
    """checkpoint_25 written by a shape: the reference run's own for one process, else steps 1-25 run once
    on that shape (and kept for the other cases that start from it)."""
    made: dict[str, Path] = {"one": reference_run / f"checkpoint_{HALF}"}

    def get(shape: str) -> Path:
        if shape not in made:
            model_dir = tmp_path_factory.mktemp(f"first_half_{shape}") / "model_dir"
            r = run_gptx("train", *tiny_args(tiny_data, model_dir, *SHAPES[shape], "--max-steps", str(HALF)))
            assert r.returncode == 0, r.stderr
            assert f"on {WORLD[shape]} x cpu ({SHAPES[shape][-1]})" in r.stdout
            made[shape] = model_dir / f"checkpoint_{HALF}"
        return made[shape]

    return get


@pytest.mark.parametrize(("written", "resumed"), CASES, ids=[f"{a}-to-{b}" for a, b in CASES])
def test_a_checkpoint_resumes_on_another_shape_as_the_uninterrupted_run(
    written, resumed, tiny_data, reference_run, first_half, tmp_path
):
    checkpoint = first_half(written)
    before = train_state(checkpoint)
    assert before["world_size"] == WORLD[written]
    assert before["samples_seen"] == HALF * GLOBAL_BATCH  # the global position, not a rank's
    assert (checkpoint / "optim").is_dir() == written.startswith("fsdp")  # DCP shards, else a full state
    model_dir = tmp_path / "resumed"
    r = run_gptx(
        "train", *tiny_args(tiny_data, model_dir, *SHAPES[resumed]), "--checkpoint-path", str(checkpoint)
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert f"training steps {HALF}..{END} on {WORLD[resumed]} x cpu" in r.stdout, r.stdout
    reseeded = f"checkpoint written by {WORLD[written]} processes; RNG reseeded for {WORLD[resumed]}"
    assert (reseeded in r.stdout) == (WORLD[written] != WORLD[resumed]), r.stdout
    assert "Traceback" not in r.stderr, r.stderr
    # the data position carried over: the last checkpoint counts from the first half's position
    after = train_state(model_dir / f"checkpoint_{END}")
    assert (after["world_size"], after["samples_seen"]) == (WORLD[resumed], END * GLOBAL_BATCH)
    # ... and the samples are the same: every step's loss is the uninterrupted run's
    got, want = read_metrics(model_dir), read_metrics(reference_run)
    assert sorted(got) == list(range(HALF + 1, END + 1))
    for step in got:
        assert got[step]["loss"] == pytest.approx(want[step]["loss"], abs=TOL), step
    got_eval, want_eval = read_metrics(model_dir, "eval"), read_metrics(reference_run, "eval")
    assert sorted(got_eval) == [END]
    assert got_eval[END]["loss"] == pytest.approx(want_eval[END]["loss"], abs=TOL)
    weights = load_file(model_dir / f"checkpoint_{END}" / "model.safetensors")
    reference = load_file(reference_run / f"checkpoint_{END}" / "model.safetensors")
    assert sorted(weights) == sorted(reference)
    for name, tensor in reference.items():
        assert (weights[name] - tensor).abs().max().item() <= TOL, name


def test_a_process_count_that_does_not_divide_the_global_batch_is_refused_in_one_line(
    tiny_data, reference_run, tmp_path
):
    model_dir = tmp_path / "three"
    shutil.copytree(reference_run / f"checkpoint_{HALF}", model_dir / f"checkpoint_{HALF}")  # a run to resume
    r = run_gptx("train", *tiny_args(tiny_data, model_dir, "--nproc", "3"))
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines() == [
        f"error: train_dataloader.batch_size {GLOBAL_BATCH} (the global batch) does not divide over 3 "
        "processes; choose a process count that divides it"
    ]
    assert r.stdout == ""
    assert sorted(p.name for p in model_dir.iterdir()) == [f"checkpoint_{HALF}"]  # nothing ran
