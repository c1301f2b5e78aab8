"""Fixtures for the data tests (helpers live in datagen.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from datagen import EDGE_TEXTS, stdlib_documents


@pytest.fixture
def documents() -> list[str]:
    """40 real documents of varied length plus the edge cases."""
    docs = stdlib_documents(34)
    docs = [d[: 300 + 97 * i % 4000] for i, d in enumerate(docs)]
    return docs[:17] + EDGE_TEXTS + docs[17:]


@pytest.fixture
def tokenizer_env(gpt2_tokenizer_dir: Path) -> dict[str, str]:
    """Environment for CLI runs: presets from ../shared, hub offline."""
    return {
        "GPTX_TOKENIZER_DIR": str(gpt2_tokenizer_dir.parent),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
    }
