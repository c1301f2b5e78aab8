"""Shared fixtures; the helpers they use live in gptx_testing.py (conftest is not importable by name:
tests/data and tests/train have conftest.py files of their own)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# pytest runs 2 workers on 2 cores: one thread per process (and per CLI subprocess) avoids
# oversubscription, which made tiny-model runs many times slower.
os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from gptx_testing import run_gptx, shared_path  # noqa: E402

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
