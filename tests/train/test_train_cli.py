"""End-to-end `gptx train` runs on CPU with the tiny config and a tiny HDF5 set from `gptx preprocess`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from train_helpers import REPO, popen_env, read_metrics, run_gptx, tiny_args

pytestmark = pytest.mark.slow


def test_loss_falls_over_50_steps(reference_run):
    losses = read_metrics(reference_run)
    assert sorted(losses) == list(range(1, 51))
    first = sum(losses[s]["loss"] for s in (1, 2, 3)) / 3
    last = sum(losses[s]["loss"] for s in (48, 49, 50)) / 3
    assert last < 0.8 * first, (first, last)
    evals = read_metrics(reference_run, "eval")
    assert sorted(evals) == [25, 50] and evals[50]["loss"] < evals[25]["loss"]


def test_metrics_lines_carry_loss_lr_grad_norm_throughput(reference_run):
    record = read_metrics(reference_run)[10]
    assert {"step", "split", "loss", "lr", "grad_norm", "tokens_per_s", "tflops", "memory_gib"} <= set(record)
    # the tiny config's warm-up: LinearLR 0 -> 1e-3 over 5 steps, then cosine; step 10 used lr_at(9)
    assert read_metrics(reference_run)[1]["lr"] == 0.0
    assert read_metrics(reference_run)[6]["lr"] == pytest.approx(1e-3)
    assert any((reference_run / "train").glob("events.out.tfevents.*"))
    assert any((reference_run / "eval").glob("events.out.tfevents.*"))


def test_checkpoints_appear_at_the_configured_steps(reference_run):
    from gptx_cli.checkpoint import list_checkpoints

    assert [step for step, _ in list_checkpoints(reference_run)] == [25, 50]
    ckpt = reference_run / "checkpoint_25"
    assert {p.name for p in ckpt.iterdir()} >= {
        "gptx.json",
        "config.yaml",
        "model.safetensors",
        "train_state.pt",
    }
    assert json.loads((ckpt / "gptx.json").read_text())["step"] == 25
    assert "train_dataloader" in (ckpt / "config.yaml").read_text()


def test_resume_continues_with_bit_identical_losses(tiny_data, reference_run, tmp_path):
    model_dir = tmp_path / "resumed"
    first = run_gptx("train", *tiny_args(tiny_data, model_dir, "--max-steps", "15"))
    assert first.returncode == 0, first.stderr
    second = run_gptx("train", *tiny_args(tiny_data, model_dir, "--max-steps", "30"))
    assert second.returncode == 0, second.stderr
    assert "resuming from" in second.stdout
    reference, resumed = read_metrics(reference_run), read_metrics(model_dir)
    assert sorted(resumed) == list(range(1, 31))
    assert [resumed[s]["loss"] for s in range(1, 31)] == [reference[s]["loss"] for s in range(1, 31)]
    assert read_metrics(model_dir, "eval")[25]["loss"] == read_metrics(reference_run, "eval")[25]["loss"]


def test_micro_batches_accumulate_to_the_same_global_batch_losses(tiny_data, reference_run, tmp_path):
    model_dir = tmp_path / "micro"
    r = run_gptx("train", *tiny_args(tiny_data, model_dir, "--micro-batch-size", "2", "--max-steps", "3"))
    assert r.returncode == 0, r.stderr
    assert "4 micro-batch(es) of 2" in r.stdout
    reference = read_metrics(reference_run)
    for step, record in read_metrics(model_dir).items():
        assert record["loss"] == pytest.approx(reference[step]["loss"], abs=1e-5)


def test_cbfloat16_runs_as_bfloat16_autocast_with_a_note(tiny_data, reference_run, tmp_path):
    model_dir = tmp_path / "bf16"
    precision = [
        "precision.enabled=true",
        "precision.fp16_type=cbfloat16",
        "precision.loss_scaling_factor=dynamic",
    ]
    r = run_gptx(
        "train",
        *tiny_args(tiny_data, model_dir, *[a for p in precision for a in ("--set", p)], "--max-steps", "3"),
    )
    assert r.returncode == 0, r.stderr
    assert "cbfloat16 is a Cerebras format; running as bfloat16" in r.stdout
    losses, reference = read_metrics(model_dir), read_metrics(reference_run)
    assert losses[1]["loss"] != reference[1]["loss"]  # the matmuls really ran in bfloat16
    assert losses[1]["loss"] == pytest.approx(reference[1]["loss"], abs=0.05)


def test_fp16_on_a_cpu_runs_as_bfloat16_as_modelzoo_with_a_note(tiny_data, tmp_path):
    """ModelZoo's MixedPrecision.pre_setup: 'Mixed precision on CPU is only supported with bfloat16'."""
    runs = {}
    for fp16_type in ("float16", "bfloat16"):
        model_dir = tmp_path / fp16_type
        sets = ["precision.enabled=true", f"precision.fp16_type={fp16_type}"]
        sets += ["precision.loss_scaling_factor=dynamic"]
        r = run_gptx(
            "train",
            *tiny_args(tiny_data, model_dir, *[a for p in sets for a in ("--set", p)], "--max-steps", "2"),
        )
        assert r.returncode == 0, r.stderr
        runs[fp16_type] = (r.stdout, read_metrics(model_dir))
    out, records = runs["float16"]
    assert out.count("fp16_type float16 on a CPU runs as bfloat16, as ModelZoo does") == 1
    assert "trainer/callbacks/precision.py" in out and "backend.cpu_float16" in out
    assert "fp16_type float16 on a CPU" not in runs["bfloat16"][0]
    # the same run as bfloat16: same losses, and no loss scale (ModelZoo's CPU GradScaler is disabled)
    assert [records[s]["loss"] for s in (1, 2)] == [runs["bfloat16"][1][s]["loss"] for s in (1, 2)]
    assert all(records[s].get("loss_scale") is None for s in (1, 2))


def test_fp16_dynamic_loss_scaling_skips_overflowing_steps_and_holds_the_schedule(tiny_data, tmp_path):
    model_dir = tmp_path / "fp16"
    precision = [
        "precision.enabled=true", "precision.fp16_type=float16", "precision.loss_scaling_factor=dynamic",
        "backend.cpu_float16=true", "precision.initial_loss_scale=1.0e+30", "precision.max_loss_scale=1.0e+30",
    ]  # fmt: skip
    r = run_gptx(
        "train",
        *tiny_args(tiny_data, model_dir, *[a for p in precision for a in ("--set", p)], "--max-steps", "4"),
    )
    assert r.returncode == 0, r.stderr
    records = read_metrics(model_dir)
    # every scaled gradient overflows fp16: the step is skipped, the scale halves, the warm-up waits
    assert [records[s]["loss_scale"] for s in (1, 2, 3, 4)] == [1e30 / 2, 1e30 / 4, 1e30 / 8, 1e30 / 16]
    assert [records[s]["lr"] for s in (1, 2, 3, 4)] == [0.0, 0.0, 0.0, 0.0]


def test_fp16_dynamic_loss_scaling_resumes_bit_exactly_through_skipped_steps(tiny_data, tmp_path):
    """The scale, its counters, the held-back schedule and AdamW's step count live on the device and
    go through the checkpoint: 4 steps + resume + 4 steps equal 8 steps, overflows included."""
    precision = [
        "precision.enabled=true", "precision.fp16_type=float16", "precision.loss_scaling_factor=dynamic",
        "backend.cpu_float16=true", "precision.initial_loss_scale=1048576", "precision.max_loss_scale=1048576",
        "precision.steps_per_increase=2", "loop.max_steps=8", "checkpoint.steps=4",
    ]  # fmt: skip
    sets = [a for p in precision for a in ("--set", p)]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert run_gptx("train", *tiny_args(tiny_data, straight, *sets)).returncode == 0
    assert run_gptx("train", *tiny_args(tiny_data, resumed, *sets, "--max-steps", "4")).returncode == 0
    second = run_gptx("train", *tiny_args(tiny_data, resumed, *sets))
    assert second.returncode == 0, second.stderr
    assert "resuming from" in second.stdout
    keys = ("loss", "lr", "loss_scale", "grad_norm")
    want, got = read_metrics(straight), read_metrics(resumed)
    assert [[got[s][k] for k in keys] for s in range(1, 9)] == [
        [want[s][k] for k in keys] for s in range(1, 9)
    ]
    scales = [want[s]["loss_scale"] for s in range(1, 9)]
    assert scales[0] < 1.0e12 and min(scales) < max(scales[1:])  # steps skipped (halved), then doubling


def test_sigterm_saves_a_checkpoint_and_exits_zero(tiny_data, tmp_path):
    model_dir = tmp_path / "sigterm"
    args = tiny_args(
        tiny_data, model_dir, "--set", "loop.max_steps=100000", "--set", "checkpoint.steps=100000"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "gptx_cli.cli", "train", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=popen_env(),
    )  # fmt: skip
    metrics = model_dir / "metrics.jsonl"
    deadline = time.time() + 60
    while time.time() < deadline and (not metrics.exists() or len(metrics.read_text().splitlines()) < 3):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "stopped by SIGTERM" in out
    from gptx_cli.checkpoint import latest_checkpoint, read_checkpoint_meta

    latest = latest_checkpoint(model_dir)
    assert latest is not None
    assert read_checkpoint_meta(latest)["step"] == max(read_metrics(model_dir))


def test_kill_9_during_checkpoint_write_leaves_previous_checkpoint_loadable(tiny_data, tmp_path):
    from gptx_cli.checkpoint import latest_checkpoint, read_checkpoint_meta

    # wider model so each checkpoint takes a few milliseconds to write; one checkpoint per step
    base = [
        "--set", "model.hidden_size=256", "--set", "model.filter_size=1024",
        "--set", "checkpoint.steps=1", "--set", "checkpoint.keep_last_n=2", "--set", "loop.eval_frequency=100000",
    ]  # fmt: skip
    for attempt in range(3):
        model_dir = tmp_path / f"killed{attempt}"
        model_dir.mkdir()
        proc = subprocess.Popen(
            [sys.executable, "-m", "gptx_cli.cli", "train", *tiny_args(tiny_data, model_dir, *base, "--max-steps", "100000")],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=REPO, env=popen_env(),
        )  # fmt: skip
        deadline, killed = time.time() + 60, False
        while time.time() < deadline and proc.poll() is None:
            if latest_checkpoint(model_dir) is not None and any(
                ".tmp-" in p.name for p in model_dir.iterdir()
            ):
                os.kill(proc.pid, signal.SIGKILL)
                killed = True
                break
            time.sleep(0.001)
        _, err = proc.communicate(timeout=30)
        assert killed, err
        if any(".tmp-" in p.name for p in model_dir.iterdir()):
            break  # killed while a checkpoint was half written
    else:
        pytest.fail("never caught a checkpoint mid-write")
    latest = latest_checkpoint(model_dir)
    step = read_checkpoint_meta(latest)["step"]
    from gptx_cli import load_model

    assert load_model(str(latest)) is not None
    resumed = run_gptx("train", *tiny_args(tiny_data, model_dir, *base, "--max-steps", str(step + 1)))
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming from {latest}" in resumed.stdout
    from gptx_cli.checkpoint import list_checkpoints

    assert [s for s, _ in list_checkpoints(model_dir)] == [step, step + 1]  # keep_last_n: 2


def test_non_finite_loss_stops_the_run_naming_the_step(tiny_data, tmp_path):
    blow_up = "model.embedding_initializer={name: normal, mean: 0.0, std: 1.0e+38}"
    r = run_gptx("train", *tiny_args(tiny_data, tmp_path / "nan", "--set", blow_up, "--max-steps", "3"))
    assert r.returncode == 1
    assert "loss is nan at step 1" in r.stderr and "Traceback" not in r.stderr


def test_missing_data_dir_names_the_preprocess_command(tiny_data, tmp_path):
    r = run_gptx(
        "train",
        *tiny_args(tiny_data, tmp_path / "md", "--set", f"train_dataloader.data_dir={tmp_path / 'nope'}"),
    )
    assert r.returncode == 1
    assert "gptx preprocess" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("config", ["params_gptj_6B.yaml", "params_gpt_neox_20B.yaml"])
def test_memory_guard_stops_published_configs_before_allocating(config, tmp_path):
    """The outcome only; how fast the guard answers is in benchmarks/bench_reliability.py (no timed asserts)."""
    import gptx_testing

    r = gptx_testing.run_gptx("train", str(REPO / "configs" / config), "--target-device", "CPU", cwd=tmp_path)
    assert r.returncode == 1, r.stderr
    assert "needs about" in r.stderr and "GiB" in r.stderr and "what would help" in r.stderr
    assert not (tmp_path / "model_dir").exists()  # refused before anything was written


def test_in_process_training_leaves_the_garbage_collector_as_it_found_it(tiny_data, tmp_path):
    """The trainer freezes the objects alive after its first step (so full collections stop walking the
    model and compiled code mid-run) and must unfreeze them when it returns or fails, or a process that
    trains twice (a notebook, a test) would never collect the first run's model."""
    import gc

    from gptx_cli.config import load_run_spec
    from gptx_cli.train.trainer import TrainOptions, train

    args = tiny_args(tiny_data, tmp_path / "run")
    overrides = [args[i + 1] for i, a in enumerate(args) if a == "--set"] + ["loop.max_steps=3"]
    spec = load_run_spec(args[0], overrides=overrides)
    frozen_during: list[int] = []
    gc.callbacks.append(probe := lambda phase, info: frozen_during.append(gc.get_freeze_count()))
    try:
        result = train(spec, TrainOptions(model_dir=str(tmp_path / "run"), console="plain"))
    finally:
        gc.callbacks.remove(probe)
    assert result.final_loss is not None
    assert max(frozen_during, default=0) > 1000  # the model, optimizer and code were frozen mid-run
    assert gc.get_freeze_count() == 0


def test_data_with_token_ids_past_the_vocabulary_is_one_named_error(tiny_data, tmp_path):
    """The trainer asks model.vocab's one token-id check, as eval and generate do."""
    r = run_gptx(
        "train", *tiny_args(tiny_data, tmp_path / "m", "--set", "model.vocab_size=100", "--max-steps", "1")
    )
    assert r.returncode == 1
    line = r.stderr.strip().splitlines()[0]
    assert (
        line.startswith(f"error: {tiny_data['train']}: token id ")
        and "outside the model's vocabulary of 100" in line
    )
    assert "Traceback" not in r.stderr
