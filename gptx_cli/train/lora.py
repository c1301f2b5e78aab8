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
from gptx_cli.config.lora import LoraParams, describe, lora_from_raw, set_lora_callback
from gptx_cli.config.spec import ModelConfig
from gptx_cli.errors import CheckpointError, UsageError
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
        cls,
        spec: Any,
        source: Path | None,
        load_states: set[str],
        seed: int,
        *,
        save_base: bool = False,
        notes: list[str],
    ) -> tuple[LoraRun | None, set[str]]:
        """The run's LoRA side (None: no LoRA) and the states it loads from `source`.

        Resuming a LoRA checkpoint: its recorded settings must equal the config's (else refused, naming
        both); a run without LoRA settings takes the recorded ones (written into the config, so the memory
        guard and the checkpoints see them). A new LoRA run on a base model loads the base's weights only."""
        groups = lora_from_raw(spec.raw, spec.source)
        meta = read_lora_meta(source) if source is not None else None
        resuming = meta is not None and "model" in load_states
        if resuming:
            assert source is not None and meta is not None
            recorded = [LoraParams(**p) for p in meta.get("params", [])]
            if groups is None:
                set_lora_callback(spec.raw, recorded)
                groups = recorded
                notes.append(
                    f"LoRA: {source} is a LoRA checkpoint; resuming with its settings ({describe(recorded)})"
                )
            elif groups != recorded:
                raise UsageError(
                    f"{source} was trained with LoRA {describe(recorded)}; this run asks for LoRA "
                    f"{describe(groups)} (resume with the checkpoint's settings, or train into a new model_dir)"
                )
        if groups is None:
            return None, load_states
        if resuming:
            assert source is not None and meta is not None
            base = base_of(source, meta)
            if not meta.get(
                "adapters_only", True
            ):  # the checkpoint holds its base: the base's dir may be gone
                return cls(groups, base, source, save_base=True, base_in=Path(source)), load_states
            if "init_seed" in base and int(base["init_seed"]) != seed:
                raise CheckpointError(
                    f"{source}: its LoRA base is a fresh initialisation with seed {base['init_seed']}, "
                    f"this run's seed is {seed}"
                )
            check_base(source, base)
            return cls(groups, base, source, save_base=save_base), load_states
        if source is not None and "model" in load_states:  # a new LoRA run on a base model: its weights only
            run = cls(groups, describe_base(Path(source)), None, save_base=save_base)
            notes.append(f"LoRA on the base model {source}: weights only, step 0")
            return run, {"model"}
        return cls(groups, {"init_seed": seed}, None, save_base=save_base), load_states

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
