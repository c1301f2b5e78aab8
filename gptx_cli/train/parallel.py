"""Several processes and the model (launching is `train.launch`; the process group itself is
`gptx_cli.distributed`): what is applied to the model from outside it,
torchtitan style: DDP or FSDP2 (`fully_shard`), per-block activation checkpointing and per-block
`torch.compile`. None of them changes the numbers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gptx_cli.distributed import Dist
from gptx_cli.errors import UsageError
from gptx_cli.model.loss import unwrap
from gptx_cli.model.transformer import Transformer

if TYPE_CHECKING:
    import torch

STRATEGIES = ("ddp", "fsdp")


def wrap_model(model: torch.nn.Module, d: Dist, strategy: str, block_types: tuple[type, ...] = ()) -> Any:
    """DDP, or FSDP2 with one shard group per transformer block plus the root (torchtitan's recipe)."""
    if not d.enabled:
        return model
    if strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel as DDP

        device_ids = [d.local_rank] if d.device.startswith("cuda") else None
        return DDP(model, device_ids=device_ids)
    if strategy == "fsdp":
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh("cuda" if d.device.startswith("cuda") else "cpu", (d.world_size,))
        for module in model.modules():
            if block_types and isinstance(module, block_types):
                fully_shard(module, mesh=mesh)
        fully_shard(model, mesh=mesh)
        return model
    raise UsageError(f"--strategy must be one of {', '.join(STRATEGIES)} (got {strategy!r})")


def _transformer(model: Any) -> Any:
    inner = unwrap(model)
    if not isinstance(inner, Transformer):
        raise TypeError(f"expected a gptx Transformer, got {type(inner).__name__}")
    return inner


def apply_activation_checkpointing(model: Any, enabled: bool = True) -> Any:
    """Recompute each block in backward instead of keeping its activations (the memory of a block's input
    per layer instead of all its intermediates): the block's forward is wrapped from outside, its
    parameter names unchanged, as torchtitan applies it. Returns the model for chaining."""
    import torch
    from torch.utils.checkpoint import checkpoint

    def recomputed(block: Any) -> Any:
        forward = type(block).forward.__get__(block)

        def run(*args: Any) -> Any:
            if block.training and torch.is_grad_enabled():
                return checkpoint(forward, *args, use_reentrant=False)
            return forward(*args)

        return run

    for block in _transformer(model).layers:
        block.__dict__.pop("forward", None)
        if enabled:
            block.forward = recomputed(block)
    return model


def compile_model(model: Any, **compile_kwargs: Any) -> Any:
    """torch.compile each block in place (parameter names are unchanged, so checkpoints and optimizer
    state keep working; one graph is compiled and reused for every layer); the embedding, final LayerNorm
    and chunked loss stay eager. kwargs go to torch.compile; returns the model."""
    for layer in _transformer(model).layers:
        layer.compile(**compile_kwargs)
    return model


def is_sharded(d: Dist, strategy: str) -> bool:
    """Whether the model is sharded over the processes (FSDP2): then it is built on the meta device and
    each process materialises only its shards (see `copy_full_into`)."""
    return d.enabled and strategy == "fsdp"


def copy_full_into(param: torch.Tensor, full: torch.Tensor) -> None:
    """Set a parameter from its full value: a plain tensor takes all of it, an FSDP2 parameter (a DTensor)
    only this process's shard of it. Every process passes the same `full`, so the shard is cut locally
    (`src_data_rank=None`) and nothing is communicated."""
    import torch
    from torch.distributed.tensor import DTensor, distribute_tensor

    with torch.no_grad():
        if isinstance(param, DTensor):
            shard = distribute_tensor(full, param.device_mesh, param.placements, src_data_rank=None)
            param.to_local().copy_(shard.to_local())
        else:
            param.copy_(full)


def reshard(model: Any) -> None:
    """Put FSDP2 parameters back to their shards (a forward without backward, as in eval, leaves the root
    unsharded, and the optimizer and checkpointing expect the sharded parameters)."""
    for module in model.modules():
        if type(module).__name__.startswith("FSDP") and hasattr(module, "reshard"):
            module.reshard()


def set_grad_sync(model: Any, enabled: bool) -> Any:
    """A context (DDP) or setting (FSDP2) that skips gradient reduction on non-final micro-batches."""
    import contextlib

    if type(model).__name__ == "DistributedDataParallel":
        return contextlib.nullcontext() if enabled else model.no_sync()
    if hasattr(model, "set_requires_gradient_sync"):
        model.set_requires_gradient_sync(enabled)
    return contextlib.nullcontext()
