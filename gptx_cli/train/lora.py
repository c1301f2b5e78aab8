"""The trainer's side of LoRA (`gptx_cli.model.lora` holds the adapters themselves): where a run's base
model and adapters come from, and what its checkpoints hold."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from gptx_cli.checkpoint import base_of, check_base, describe_base, open_checkpoint_weights, read_lora_meta
from gptx_cli.config.lora import LoraParams, lora_from_raw
from gptx_cli.errors import CheckpointError
from gptx_cli.model.lora import apply_lora, is_adapter, lora_meta


class LoraRun:
    """The trainer's LoRA side: where the base and the adapters come from, and what a checkpoint holds."""

    def __init__(self, groups: list[LoraParams], base: dict[str, Any], adapters: Path | None) -> None:
        self.groups, self.base, self.adapter_source = groups, base, adapters

    @classmethod
    def create(cls, spec: Any, ckpt_source: Path | None, load_states: set[str], seed: int) -> LoraRun | None:
        groups = lora_from_raw(spec.raw, spec.source)
        if groups is None:
            return None
        meta = read_lora_meta(ckpt_source) if ckpt_source is not None else None
        if meta is not None and "model" in load_states:  # resuming a LoRA run: its base, its adapters
            base = base_of(ckpt_source, meta)  # type: ignore[arg-type]
            if "init_seed" in base and int(base["init_seed"]) != seed:
                raise CheckpointError(
                    f"{ckpt_source}: its LoRA base is a fresh initialisation with seed {base['init_seed']}, "
                    f"this run's seed is {seed}"
                )
            check_base(ckpt_source, base)  # type: ignore[arg-type]
            return cls(groups, base, ckpt_source)
        if ckpt_source is not None and "model" in load_states:
            return cls(groups, describe_base(Path(ckpt_source)), None)
        return cls(groups, {"init_seed": seed}, None)

    def base_source(self) -> Path | None:
        return Path(self.base["path"]) if "path" in self.base else None

    def attach(self, model: nn.Module, seed: int) -> list[str]:
        return apply_lora(model, self.groups, seed)

    def load_adapters(self, model: nn.Module, device: Any, copy: Any) -> None:
        """Adapters from the checkpoint being resumed (if any) into the model's adapter parameters."""
        if self.adapter_source is None:
            return
        params = {n: p for n, p in model.named_parameters() if is_adapter(n)}
        seen = set()
        with open_checkpoint_weights(self.adapter_source) as src, torch.no_grad():
            for name, t in src.items():
                if not is_adapter(name):
                    continue
                if name not in params or tuple(t.shape) != tuple(params[name].shape):
                    raise CheckpointError(
                        f"{self.adapter_source}: adapter {name} {tuple(t.shape)} does not match the Lora "
                        "callback of this config"
                    )
                copy(params[name], t.to(device, params[name].dtype))
                seen.add(name)
        missing = sorted(set(params) - seen)
        if missing:
            raise CheckpointError(f"{self.adapter_source}: adapter {missing[0]} missing")

    def meta(self) -> dict[str, Any]:
        return lora_meta(self.groups, self.base, adapters_only=True)

    @staticmethod
    def select(weights: Any) -> Any:
        """Only the adapters of a state dict or a stream of (name, tensor)."""
        if isinstance(weights, dict):
            return {k: v for k, v in weights.items() if is_adapter(k)}
        return ((k, v) for k, v in weights if is_adapter(k))
