"""The trainer's side of LoRA (`gptx_cli.model.lora` holds the adapters themselves): where a run's base
model and adapters come from, and what its checkpoints hold."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gptx_cli.checkpoint import (
    base_of,
    check_base,
    describe_base,
    open_base,
    open_checkpoint_weights,
    read_lora_meta,
    resolve,
)
from gptx_cli.config.lora import LoraParams, lora_from_raw
from gptx_cli.config.spec import ModelConfig
from gptx_cli.errors import CheckpointError
from gptx_cli.model.lora import apply_lora, is_adapter, lora_meta


class LoraRun:
    """The trainer's LoRA side: where the base and the adapters come from, and what a checkpoint holds.

    `base` names the base model for provenance (gptx.json `lora.base`); `base_in` is set when the
    checkpoint being resumed holds the base weights itself (`--lora-save-base`), which are then read from
    it rather than from the named base. `save_base`: the checkpoints hold the base weights as well as the
    adapters; a run resumed from such a checkpoint keeps writing them (its base may be gone)."""

    def __init__(
        self,
        groups: list[LoraParams],
        base: dict[str, Any],
        adapters: Path | None,
        *,
        save_base: bool = False,
        base_in: Path | None = None,
    ) -> None:
        self.groups, self.base, self.adapter_source = groups, base, adapters
        self.save_base, self.base_in = save_base, base_in

    @classmethod
    def create(
        cls, spec: Any, ckpt_source: Path | None, load_states: set[str], seed: int, save_base: bool = False
    ) -> LoraRun | None:
        groups = lora_from_raw(spec.raw, spec.source)
        if groups is None:
            return None
        meta = read_lora_meta(ckpt_source) if ckpt_source is not None else None
        if meta is not None and "model" in load_states:  # resuming a LoRA run: its base, its adapters
            assert ckpt_source is not None
            base = base_of(ckpt_source, meta)
            if not meta.get(
                "adapters_only", True
            ):  # the checkpoint holds its base: the base's dir may be gone
                return cls(groups, base, ckpt_source, save_base=True, base_in=Path(ckpt_source))
            if "init_seed" in base and int(base["init_seed"]) != seed:
                raise CheckpointError(
                    f"{ckpt_source}: its LoRA base is a fresh initialisation with seed {base['init_seed']}, "
                    f"this run's seed is {seed}"
                )
            check_base(ckpt_source, base)
            return cls(groups, base, ckpt_source, save_base=save_base)
        if ckpt_source is not None and "model" in load_states:
            return cls(groups, describe_base(Path(ckpt_source)), None, save_base=save_base)
        return cls(groups, {"init_seed": seed}, None, save_base=save_base)

    def base_source(self) -> Path | None:
        """The directory the base weights are read from (None: a fresh initialisation)."""
        if self.base_in is not None:
            return self.base_in
        return Path(self.base["path"]) if "path" in self.base else None

    @contextmanager
    def open_base(self, cfg: ModelConfig) -> Iterator[Iterator[tuple[str, torch.Tensor]]]:
        """The base tensors: from the resumed checkpoint when it holds them, else from the named base."""
        if self.base_in is not None:
            meta = read_lora_meta(self.base_in)
            assert meta is not None
            with open_base(self.base_in, meta, cfg) as tensors:
                yield tensors
            return
        source = self.base_source()
        assert source is not None
        with resolve(source).open_weights() as tensors:
            yield tensors

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
        return lora_meta(self.groups, self.base, adapters_only=not self.save_base)

    def select(self, weights: Any) -> Any:
        """What a checkpoint holds of a state dict or a stream of (name, tensor): the adapters only, or
        everything (the frozen base as trained, i.e. as loaded, and the adapters) with `save_base`."""
        if self.save_base:
            return weights
        if isinstance(weights, dict):
            return {k: v for k, v in weights.items() if is_adapter(k)}
        return ((k, v) for k, v in weights if is_adapter(k))
