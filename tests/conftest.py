"""Shared fixtures; the helpers they use live in gptx_testing.py (conftest is not importable by name:
tests/data has a conftest.py of its own)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

# pytest runs 2 workers on 2 cores: one thread per process (and per CLI subprocess) avoids
# oversubscription, which made tiny-model runs many times slower.
os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from gptx_testing import built_once, run_gptx, shared_path, tiny_args, write_text  # noqa: E402

# The longest files (minutes of CPU between them, measured with --durations), then the rest of the
# tests marked slow, then everything else. Started first, the long runs spread over both workers while
# short tests fill the gaps; started last, one of them kept a worker busy while the other sat idle.
LONGEST_FIRST = [
    "test_gpu_scripts_cpu.py",
    "test_lora.py",
    "test_reliability.py",
    "test_distributed.py",
    "test_reshape.py",
    "test_eval_lm_eval_parity.py",
    "test_demo.py",
    "test_bench_gpu_tiny.py",
    "test_train_cli.py",
]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    slow_files = {item.path for item in items if item.get_closest_marker("slow") is not None}

    def rank(item: pytest.Item) -> int:  # per file, so a file's tests (and its fixtures) stay together
        name = item.path.name
        if name in LONGEST_FIRST:
            return LONGEST_FIRST.index(name)
        return len(LONGEST_FIRST) + (item.path not in slow_files)

    items.sort(key=rank)  # stable: the order within a file stays as written


@pytest.fixture
def gpt2_tokenizer_dir() -> Path:
    return shared_path("assets", "tokenizers", "gpt2")


@pytest.fixture
def neox_tokenizer_json() -> Path:
    return shared_path("assets", "tokenizers", "neox-20b", "neox-encoder.json")


@pytest.fixture
def modelzoo_configs_dir() -> Path:
    return shared_path("reference", "modelzoo-configs")


@pytest.fixture
def gptx():
    return run_gptx


# A tiny HDF5 set made by `gptx preprocess` and one 50-step reference run, shared by the training tests
# (which compare against it) and the docs test (whose examples run on it). Built once per session, not
# once per xdist worker (gptx_testing.built_once).


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> dict[str, Path]:
    """train/ and val/ HDF5 dirs (msl 32, a small byte-level BPE trained on the text) made by `gptx preprocess`."""

    def build(root: Path) -> None:
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

    root = built_once(tmp_path_factory, "tiny_data", build)
    tokenizer = root / "train" / "tokenizer.json"
    vocab_size = len(json.loads(tokenizer.read_text())["model"]["vocab"])
    return {"train": root / "train", "val": root / "val", "tokenizer": tokenizer, "vocab_size": vocab_size}


@pytest.fixture(scope="session")
def reference_run(tiny_data, tmp_path_factory) -> Path:
    """50 uninterrupted steps of the tiny config (checkpoints at 25 and 50, eval at 25 and 50). Read it,
    do not write into it: copy it first."""

    def build(root: Path) -> None:
        r = run_gptx("train", *tiny_args(tiny_data, root / "model_dir"))
        assert r.returncode == 0, r.stderr

    return built_once(tmp_path_factory, "reference", build) / "model_dir"
