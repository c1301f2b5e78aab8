"""Speed and memory switches applied from outside the model; none changes the numbers.

- `apply_activation_checkpointing(model)`: each block is recomputed in backward instead of keeping its
  activations (the memory of a block's input per layer instead of all its intermediates).
- `compile_model(model)`: `torch.compile` each block in place (parameter names are unchanged, so
  checkpoints and optimizer state keep working); the embedding, final LayerNorm and chunked loss
  stay eager. Per-block compilation compiles one graph and reuses it for every layer.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from gptx_cli.model.init import optimizer_param_groups  # noqa: F401  (re-exported for the trainer)
from gptx_cli.model.transformer import Transformer


def _transformer(model: nn.Module) -> Transformer:
    from gptx_cli.model.loss import unwrap

    inner = unwrap(model)
    if not isinstance(inner, Transformer):
        raise TypeError(f"expected a gptx Transformer, got {type(inner).__name__}")
    return inner


def apply_activation_checkpointing(model: nn.Module, enabled: bool = True) -> nn.Module:
    """Turn per-block activation checkpointing on (or off); returns the model for chaining."""
    _transformer(model).activation_checkpointing = enabled
    return model


def compile_model(model: nn.Module, **compile_kwargs: Any) -> nn.Module:
    """Compile every block in place with torch.compile (kwargs go to torch.compile); returns the model."""
    for layer in _transformer(model).layers:
        layer.compile(**compile_kwargs)
    return model
