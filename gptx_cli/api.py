"""The Python API: `build_model` (fresh, seeded) and `load_model` (gptx checkpoint, model_dir or HF dir).

import gptx_cli
model = gptx_cli.load_model("path/to/gpt-j-6b", dtype="bfloat16")   # HF dir: config.json + weights
logits = model(input_ids)                                           # [batch, seq, vocab]
model = gptx_cli.build_model("configs/tiny_gptj.yaml", seed=1)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from gptx_cli.checkpoint import resolve
from gptx_cli.config import load_run_spec
from gptx_cli.config.spec import ModelConfig, RunSpec
from gptx_cli.errors import UsageError
from gptx_cli.model.init import init_model
from gptx_cli.model.transformer import Transformer
from gptx_cli.weights import torch_dtype


def build_model(config: Any, device: str | torch.device = "cpu", seed: int | None = None) -> Transformer:
    """A freshly initialised model (train mode) from a config path, a RunSpec or a ModelConfig.
    `seed` defaults to the config's seed, then 0."""
    if isinstance(config, ModelConfig):
        cfg, config_seed = config, None
    elif isinstance(config, RunSpec):
        cfg, config_seed = config.model, config.seed
    elif isinstance(config, (str, Path)):
        spec = load_run_spec(config)
        cfg, config_seed = spec.model, spec.seed
    else:
        raise UsageError(
            f"build_model: expected a config path, RunSpec or ModelConfig, got {type(config).__name__}"
        )
    return init_model(cfg, device, seed if seed is not None else config_seed)


def load_model(path: str | Path, device: str | torch.device = "cpu", dtype: Any = None) -> Transformer:
    """Load a gptx checkpoint dir, a model_dir of checkpoint_<step>/ dirs (the latest), or an HF GPT-J /
    GPT-NeoX dir (config.json + safetensors / .bin, single or sharded). Returns the model in eval mode,
    in `dtype` (default: the stored dtype) on `device`."""
    target = dtype if dtype is None or isinstance(dtype, torch.dtype) else torch_dtype(str(dtype))
    if target is None and dtype is not None:
        raise UsageError(f"load_model: unknown dtype {dtype!r}")
    return resolve(path).load_model(device, target)
