"""Fixtures for training tests: a tiny HDF5 set made by `gptx preprocess` and one 50-step reference run
that several end-to-end tests compare against."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from train_helpers import run_gptx, tiny_args, write_text


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> dict[str, Path]:
    """train/ and val/ HDF5 dirs (msl 32, a small byte-level BPE trained on the text) made by `gptx preprocess`."""
    root = tmp_path_factory.mktemp("tiny_data")
    write_text(root / "train.txt", 300, seed=0)
    write_text(root / "val.txt", 40, seed=1)
    r = run_gptx(
        "preprocess", "--input", str(root / "train.txt"), "--output-dir", str(root / "train"),
        "--train-tokenizer", "258", "--max-seq-length", "32",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    r = run_gptx(
        "preprocess", "--input", str(root / "val.txt"), "--output-dir", str(root / "val"),
        "--tokenizer", str(root / "train" / "tokenizer.json"), "--max-seq-length", "32",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    tokenizer = root / "train" / "tokenizer.json"
    vocab_size = len(json.loads(tokenizer.read_text())["model"]["vocab"])
    return {"train": root / "train", "val": root / "val", "tokenizer": tokenizer, "vocab_size": vocab_size}


@pytest.fixture(scope="session")
def reference_run(tiny_data, tmp_path_factory) -> Path:
    """50 uninterrupted steps of the tiny config (checkpoints at 25 and 50, eval at 25 and 50)."""
    model_dir = tmp_path_factory.mktemp("reference") / "model_dir"
    r = run_gptx("train", *tiny_args(tiny_data, model_dir))
    assert r.returncode == 0, r.stderr
    return model_dir
