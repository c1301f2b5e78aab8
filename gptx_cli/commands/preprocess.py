from __future__ import annotations

from gptx_cli.errors import NotImplementedYet


def preprocess_cmd() -> None:
    """Tokenize and pack corpora into ModelZoo HDF5."""
    raise NotImplementedYet("gptx preprocess")
