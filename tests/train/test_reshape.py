"""Issue #23: resuming on another shape. A checkpoint written by N processes under DDP or FSDP2 (or by one
process) resumes on M processes under either strategy and continues the uninterrupted single-process
run (conftest's `reference_run`: 50 steps, checkpoints at 25 and 50) within 1e-4 in fp32: the same loss
at every step after the resume, the same eval loss and, at the end, the same weights. The data loader's
position is the global sample position in train_state.pt (`samples_seen`, world-size independent), so
the next samples are the same. A process count that does not divide the global batch is refused in one
line before any rank starts. gloo on CPU.

The second half of the reference run is replayed as one chain of resumes, each leg on another shape
(1 -> DDP 2 -> FSDP2 2 -> FSDP2 4 -> DDP 2 -> 1): five launches test five transitions, and each
transition is its own test case (legs run once, in order, on first use)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from train_helpers import read_metrics, run_gptx, tiny_args

pytestmark = [pytest.mark.slow, pytest.mark.multiprocess]

START, END = 25, 50  # the reference run's checkpoints (tiny_gptj.yaml: checkpoint.steps 25, max_steps 50)
GLOBAL_BATCH = 8  # tiny_gptj.yaml's train_dataloader.batch_size
TOL = 1e-4  # the bound in fp32 (DDP and FSDP2 sum in another order than one process)

SHAPES: dict[str, tuple[str, ...]] = {
    "one": (),
    "ddp2": ("--nproc", "2", "--strategy", "ddp"),
    "fsdp2": ("--nproc", "2", "--strategy", "fsdp"),
    "fsdp4": ("--nproc", "4", "--strategy", "fsdp"),
}
WORLD = {"one": 1, "ddp2": 2, "fsdp2": 2, "fsdp4": 4}
# (shape, last step) of each leg; the first resumes the reference run's checkpoint_25 (one process)
LEGS = [("ddp2", 30), ("fsdp2", 35), ("fsdp4", 40), ("ddp2", 45), ("one", 50)]
TRANSITIONS = [("one", *LEGS[0]), *((a, b, end) for (a, _), (b, end) in zip(LEGS, LEGS[1:], strict=False))]
IDS = ["1-to-ddp2", "ddp2-to-fsdp2", "fsdp2-to-fsdp4", "fsdp4-to-ddp2", "ddp2-to-1"]


def train_state(checkpoint: Path) -> dict:
    return torch.load(checkpoint / "train_state.pt", map_location="cpu", weights_only=False)


@pytest.fixture(scope="module")
def chain(tiny_data, reference_run, tmp_path_factory) -> Callable[[int], tuple[Path, Path, str]]:
    """chain(i) -> (checkpoint leg i resumed from, leg i's model_dir, its stdout); runs legs 0..i once."""
    root = tmp_path_factory.mktemp("reshape")
    runs: list[tuple[Path, Path, subprocess.CompletedProcess]] = []

    def leg(i: int) -> tuple[Path, Path, str]:
        while len(runs) <= i:
            k = len(runs)
            if k and runs[-1][2].returncode != 0:
                pytest.fail(f"leg {k - 1} ({IDS[k - 1]}) failed")
            source = (
                runs[-1][1] / f"checkpoint_{LEGS[k - 1][1]}" if k else reference_run / f"checkpoint_{START}"
            )
            shape, last = LEGS[k]
            model_dir = root / f"leg{k}_{shape}"
            r = run_gptx(
                "train", *tiny_args(tiny_data, model_dir, *SHAPES[shape], "--max-steps", str(last)),
                "--checkpoint-path", str(source),
            )  # fmt: skip
            runs.append((source, model_dir, r))
        source, model_dir, r = runs[i]
        assert r.returncode == 0, r.stderr[-3000:]
        assert "Traceback" not in r.stderr, r.stderr[-3000:]
        return source, model_dir, r.stdout

    return leg


@pytest.mark.parametrize(
    ("i", "written", "resumed", "last"), [(i, *t) for i, t in enumerate(TRANSITIONS)], ids=IDS
)
def test_a_checkpoint_resumes_on_another_shape_as_the_uninterrupted_run(
    i, written, resumed, last, chain, reference_run
):
    source, model_dir, out = chain(i)
    first = LEGS[i - 1][1] if i else START
    before = train_state(source)
    assert (before["step"], before["world_size"]) == (first, WORLD[written])
    assert before["samples_seen"] == first * GLOBAL_BATCH  # the global position, not a rank's
    assert (source / "optim").is_dir() == written.startswith("fsdp")  # DCP shards, else a full state
    strategy = f" ({SHAPES[resumed][-1]})" if WORLD[resumed] > 1 else ""
    assert f"training steps {first}..{last} on {WORLD[resumed]} x cpu{strategy}:" in out, out
    reseeded = f"checkpoint written by {WORLD[written]} processes; RNG reseeded for {WORLD[resumed]}"
    assert (reseeded in out) == (WORLD[written] != WORLD[resumed]), out
    # the data position carried over: this leg's checkpoint counts on from the one it resumed
    after = train_state(model_dir / f"checkpoint_{last}")
    assert (after["world_size"], after["samples_seen"]) == (WORLD[resumed], last * GLOBAL_BATCH)
    # ... and the samples are the same: every step's loss is the uninterrupted run's
    got, want = read_metrics(model_dir), read_metrics(reference_run)
    assert sorted(got) == list(range(first + 1, last + 1))
    for step in got:
        assert got[step]["loss"] == pytest.approx(want[step]["loss"], abs=TOL), step


def test_the_chain_of_shapes_ends_with_the_uninterrupted_runs_eval_loss_and_weights(chain, reference_run):
    _, model_dir, _ = chain(len(LEGS) - 1)
    got, want = read_metrics(model_dir, "eval"), read_metrics(reference_run, "eval")
    assert got[END]["loss"] == pytest.approx(want[END]["loss"], abs=TOL)
    weights = load_file(model_dir / f"checkpoint_{END}" / "model.safetensors")
    reference = load_file(reference_run / f"checkpoint_{END}" / "model.safetensors")
    assert sorted(weights) == sorted(reference)
    for name, tensor in reference.items():
        assert (weights[name] - tensor).abs().max().item() <= TOL, name


def test_a_process_count_that_does_not_divide_the_global_batch_is_refused_in_one_line(
    tiny_data, reference_run, tmp_path
):
    model_dir = tmp_path / "three"
    shutil.copytree(reference_run / f"checkpoint_{START}", model_dir / f"checkpoint_{START}")  # to resume
    r = run_gptx("train", *tiny_args(tiny_data, model_dir, "--nproc", "3"))
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines() == [
        f"error: train_dataloader.batch_size {GLOBAL_BATCH} (the global batch) does not divide over 3 "
        "processes; choose a process count that divides it"
    ]
    assert r.stdout == ""
    assert sorted(p.name for p in model_dir.iterdir()) == [f"checkpoint_{START}"]  # nothing ran
