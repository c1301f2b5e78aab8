"""Public entry points: `build_model` (fresh, seeded) and `load_model` (gptx checkpoint or HF directory).

import gptx_cli
model = gptx_cli.load_model("path/to/gpt-j-6b", dtype="bfloat16")   # HF dir: config.json + weights
logits = model(input_ids)                                           # [batch, seq, vocab]
model = gptx_cli.build_model("configs/tiny_gptj.yaml", seed=1)
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from gptx_cli.config.spec import ModelConfig, RunSpec
from gptx_cli.errors import CheckpointError, UsageError
from gptx_cli.model.init import initialize_parameters
from gptx_cli.model.transformer import Transformer


def _model_config(config: Any) -> tuple[ModelConfig, int | None]:
    if isinstance(config, ModelConfig):
        return config, None
    if isinstance(config, RunSpec):
        return config.model, config.seed
    if isinstance(config, (str, Path)):
        from gptx_cli.config import load_run_spec

        spec = load_run_spec(config)
        return spec.model, spec.seed
    raise UsageError(
        f"build_model: expected a config path, RunSpec or ModelConfig, got {type(config).__name__}"
    )


def build_model(config: Any, device: str | torch.device = "cpu", seed: int | None = None) -> Transformer:
    """A freshly initialised model (train mode). `seed` defaults to the config's seed, then 0."""
    cfg, config_seed = _model_config(config)
    with torch.device(device):  # built where it runs: no host copy of a large model
        model = Transformer(cfg)
    initialize_parameters(model, cfg, seed=seed if seed is not None else config_seed)
    return model


def _resolve_dtype(dtype: Any) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    name = str(dtype).removeprefix("torch.")
    resolved = getattr(
        torch, {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}.get(name, name), None
    )
    if not isinstance(resolved, torch.dtype):
        raise UsageError(f"load_model: unknown dtype {dtype!r}")
    return resolved


def _materialise(cfg: ModelConfig, tensors: Any, origin: Path) -> Transformer:
    """Build on the meta device and adopt the loaded tensors (no throwaway random init)."""
    with torch.device("meta"):
        model = Transformer(cfg)
    state = dict(tensors)
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        what = f"missing tensor {missing[0]}" if missing else f"unexpected tensor {unexpected[0]}"
        raise CheckpointError(f"{origin}: {what} for this model config")
    for name, shape in ((n, p.shape) for n, p in model.state_dict().items()):
        if state[name].shape != shape:
            raise CheckpointError(
                f"{origin}: tensor {name} has shape {list(state[name].shape)}, expected {list(shape)}"
            )
    model.load_state_dict(state, assign=True)
    return model


@contextmanager
def open_weights(path: str | Path) -> Iterator[tuple[ModelConfig, Iterator[tuple[str, torch.Tensor]]]]:
    """A gptx checkpoint dir or an HF GPT-J / GPT-NeoX dir as (its model config, a lazy stream of
    (gptx name, tensor) read one tensor at a time), so that no caller has to hold the whole model."""
    from gptx_cli.checkpoint import is_gptx_checkpoint, open_checkpoint_weights, read_model_config
    from gptx_cli.weights import open_tensors

    root = Path(path)
    if is_gptx_checkpoint(root):
        from gptx_cli.model.lora import open_merged, read_lora_meta

        if read_lora_meta(root) is not None:  # a LoRA checkpoint: its base with the adapters folded in
            with open_merged(root, read_model_config(root)) as merged:
                yield read_model_config(root), merged
            return
        with open_checkpoint_weights(root) as src:
            yield read_model_config(root), src.items()
    elif (root / "config.json").is_file():
        from gptx_cli.model.hf import model_config_from_hf, to_gptx

        try:
            config_json = json.loads((root / "config.json").read_text())
        except (OSError, ValueError) as err:
            raise CheckpointError(f"{root / 'config.json'}: cannot parse ({err})") from err
        cfg = model_config_from_hf(config_json)
        with open_tensors(root) as src:
            yield cfg, to_gptx(cfg, src.keys(), src.get)
    else:
        raise CheckpointError(
            f"{root}: not a model directory",
            hint="expected a gptx checkpoint (gptx.json), a model_dir with checkpoint_<step>/, or an HF dir with config.json",
        )


def load_model(path: str | Path, device: str | torch.device = "cpu", dtype: Any = None) -> Transformer:
    """Load a gptx checkpoint dir, a model_dir of checkpoint_<step>/ dirs (the latest), or an HF GPT-J /
    GPT-NeoX dir (config.json + safetensors / .bin, single or sharded). Returns the model in eval mode,
    in `dtype` (default: the stored dtype) on `device`."""
    from gptx_cli.checkpoint import is_gptx_checkpoint, latest_checkpoint

    root = Path(path)
    if not root.exists():
        raise CheckpointError(f"{root}: no such file or directory")
    if not is_gptx_checkpoint(root) and not (root / "config.json").is_file():
        latest = latest_checkpoint(root)
        if latest is not None:
            root = latest
    with open_weights(root) as (cfg, tensors):
        model = _materialise(cfg, tensors, root)
    target = _resolve_dtype(dtype)
    if target is not None:
        model = model.to(dtype=target)
    return model.to(device).eval()
