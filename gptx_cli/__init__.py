"""gptx: train, evaluate and convert GPT-J and GPT-NeoX models from Cerebras ModelZoo configs.

Nothing heavy is imported here: `import gptx_cli` and `gptx --help` stay fast and torch-free.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "build_model", "load_model"]


def load_model(path: str, device: str = "cpu", dtype: Any = None) -> Any:
    """Load a gptx checkpoint directory or a Hugging Face model directory; returns the model (eval mode)."""
    from gptx_cli.api import load_model as _load_model

    return _load_model(path, device=device, dtype=dtype)


def build_model(config: Any, device: str = "cpu", seed: int | None = None) -> Any:
    """Build a freshly initialised model from a config path, a RunSpec or a ModelConfig."""
    from gptx_cli.api import build_model as _build_model

    return _build_model(config, device=device, seed=seed)
