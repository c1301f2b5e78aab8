"""What eval, generate and lm-eval open besides the model (`gptx_cli.checkpoint.resolve`): the device,
the dtype (`gptx_cli.weights.resolve_dtype`, the one resolver) and the checkpoint's tokenizer."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from gptx_cli.checkpoint import CONFIG_FILE, ModelSource, resolve
from gptx_cli.data.params import tokenizer_of, trained_on
from gptx_cli.data.tokenizer import load_tokenizer
from gptx_cli.errors import UsageError
from gptx_cli.weights import resolve_dtype

__all__ = ["resolve_device", "resolve_dtype", "resolve_tokenizer"]


def resolve_device(name: str) -> Any:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise UsageError(f"--device {name!r}: {err}") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: CUDA is not available on this machine")
    return device


def resolve_tokenizer(
    checkpoint: str | Path | ModelSource, tokenizer: str | None, data_dirs: Iterable[str] = ()
) -> Any:
    """The tokenizer for a checkpoint, first found of:

    --tokenizer; the one the checkpoint records (gptx.json, or a Hugging Face dir's own tokenizer
    files); the one `gptx preprocess` recorded in data_params.json of the data the checkpoint was
    trained on (its config.yaml) or of `data_dirs` (the eval config's data).
    """
    if tokenizer:
        return load_tokenizer(tokenizer)
    source = checkpoint if isinstance(checkpoint, ModelSource) else resolve(checkpoint)
    if source.tokenizer:
        return load_tokenizer(source.tokenizer)
    dirs = list(data_dirs)
    if source.is_gptx:
        dirs = trained_on(source.directory / CONFIG_FILE) + dirs
    from_data = tokenizer_of(dirs)
    if from_data:
        return load_tokenizer(from_data)
    raise UsageError(
        f"checkpoint {source.directory} records no tokenizer",
        hint="pass --tokenizer (a preset such as gpt2, a file or a dir)",
    )
