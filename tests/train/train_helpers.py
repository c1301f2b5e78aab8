"""Helpers for the training tests: tiny-config CLI arguments, metrics reading, test data text."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import gptx_testing

REPO: Path = gptx_testing.REPO
# Tiny models run fastest on one thread; OpenMP threads only contend on a shared 2-core machine.
TEST_ENV = {"OMP_NUM_THREADS": "1"}


def run_gptx(*args: str, timeout: float = 300):
    """The real `gptx` CLI in a subprocess (tests/conftest.py's run_gptx) with TEST_ENV."""
    return gptx_testing.run_gptx(*args, env=TEST_ENV, timeout=timeout)


def popen_env() -> dict[str, str]:
    return {**os.environ, **TEST_ENV}


WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()


def write_text(path: Path, lines: int, seed: int) -> None:
    # Cyclic word sequences: easy to learn, so the loss falls visibly within 50 steps.
    rnd = random.Random(seed)
    with path.open("w") as f:
        for _ in range(lines):
            k = rnd.randrange(len(WORDS))
            f.write(" ".join(WORDS[(k + j) % len(WORDS)] for j in range(20)) + "\n")


def tiny_args(
    data: dict[str, Path], model_dir: Path, *extra: str, config: str = "tiny_gptj.yaml"
) -> list[str]:
    """`configs/tiny_gptj.yaml` shrunk further (hidden 32, the tiny tokenizer's vocabulary, msl 32) on the tiny data."""
    sets = [
        f"model.vocab_size={data['vocab_size']}",
        "model.hidden_size=32",
        "model.num_heads=2",
        "model.filter_size=64",
        f"train_dataloader.data_dir={data['train']}",
        f"val_dataloader.data_dir={data['val']}",
        "logging.log_steps=1",
        "loop.eval_steps=2",
    ]
    args = [str(REPO / "configs" / config), "--model-dir", str(model_dir)]
    for s in sets:
        args += ["--set", s]
    return [*args, *extra]


def read_metrics(model_dir: Path, split: str = "train") -> dict[int, dict]:
    lines = (model_dir / "metrics.jsonl").read_text().splitlines()
    return {r["step"]: r for r in map(json.loads, lines) if r["split"] == split}
