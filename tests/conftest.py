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
