"""Fail fast, before allocating, when a run cannot fit in the device's memory.

The estimate is `model.counts.memory_estimate` (fp32 weights and grads, optimizer state, activations of
one micro-batch); under FSDP the weights, grads and optimizer state divide over the processes. The
available memory is the free CUDA memory of this process's GPU, or the host's MemAvailable shared by
the local processes. Exceeding it is an error (exit 1) that names the estimate and what would help.
"""

from __future__ import annotations

import os
from typing import Any

from gptx_cli.config.lora import LoraParams, trainable_parameters
from gptx_cli.config.spec import RunSpec
from gptx_cli.errors import GptxError
from gptx_cli.fsutil import host_available_bytes
from gptx_cli.model.counts import lora_trainable, memory_estimate

GIB = 2**30
# Leave room for the allocator, the CUDA context / Python runtime and the data pipeline.
HEADROOM = 0.9
GPU_GIB_FOR_HINT = 80  # an H100: the size suggested when the run is on a CPU host


def device_available_bytes(device: str, local_processes: int) -> int | None:
    if device.startswith("cuda"):
        import torch

        free, _total = torch.cuda.mem_get_info(torch.device(device))
        return int(free)
    host = host_available_bytes()
    return None if host is None else host // max(1, local_processes)


_FROM_CONFIG: Any = object()  # estimate_bytes: the trainable parameters of the config (LoRA or all)


def estimate_bytes(
    spec: RunSpec,
    micro_batch_size: int,
    world_size: int,
    sharded: bool,
    activation_checkpointing: bool,
    trainable: int | None = _FROM_CONFIG,
) -> dict[str, int]:
    msl = spec.model.max_position_embeddings
    if spec.train_data is not None and spec.train_data.max_sequence_length:
        msl = int(spec.train_data.max_sequence_length)
    est = dict(
        memory_estimate(
            spec.model,
            micro_batch_size,
            msl,
            spec.precision,
            spec.optimizer.name,
            activation_checkpointing,
            # LoRA: grads and optimizer state for the adapters only
            trainable=lora_trainable(spec) if trainable is _FROM_CONFIG else trainable,
        )
    )
    if sharded and world_size > 1:
        for key in ("weights", "grads", "optimizer_state"):
            est[key] = -(-est[key] // world_size)
        est["total"] = est["weights"] + est["grads"] + est["optimizer_state"] + est["activations"]
    est["seq_len"] = msl
    return est


# What the memory guard proposes for LoRA: ModelZoo's Lora callback with this rank on every target.
HINT_LORA = LoraParams(r=8, alpha=16)


def check_memory(
    spec: RunSpec,
    dist: Any,
    *,
    micro_batch_size: int,
    strategy: str,
    activation_checkpointing: bool,
) -> None:
    """Raise GptxError (exit 1) if the estimate exceeds what this process's device has free. The hint
    proposes only what the estimate says would fit: a smaller micro-batch with activation checkpointing,
    LoRA (or a smaller LoRA rank), or FSDP over two or more processes."""
    world = dist.world_size
    sharded = strategy == "fsdp"
    est = estimate_bytes(spec, micro_batch_size, world, sharded, activation_checkpointing)
    local = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    available = device_available_bytes(dist.device, local)
    if available is None or est["total"] <= available * HEADROOM:
        return
    where = "GPU" if dist.device.startswith("cuda") else "CPU RAM"
    raise GptxError(
        f"this run needs about {est['total'] / GIB:.1f} GiB per process (weights {est['weights'] / GIB:.1f}, "
        f"grads {est['grads'] / GIB:.1f}, optimizer {est['optimizer_state'] / GIB:.1f}, activations "
        f"{est['activations'] / GIB:.1f} GiB for a micro-batch of {micro_batch_size} x {est['seq_len']}), "
        f"but {where} has {available / GIB:.1f} GiB available",
        hint="what would help: "
        + "; ".join(_what_would_fit(spec, dist, sharded, int(available * HEADROOM), micro_batch_size)),
    )


def _what_would_fit(spec: RunSpec, dist: Any, sharded: bool, budget: int, micro_batch_size: int) -> list[str]:
    world, gpu = dist.world_size, dist.device.startswith("cuda")
    helps = []
    smallest = estimate_bytes(spec, 1, world, sharded, True)
    if smallest["total"] <= budget:
        helps.append(
            f"--micro-batch-size 1 --activation-checkpointing (about {smallest['total'] / GIB:.1f} GiB)"
        )
    current = lora_trainable(spec)
    hint_trainable = trainable_parameters(spec.model, [HINT_LORA])
    if current is None or (hint_trainable is not None and current > hint_trainable):
        flag = (
            f"--lora-r {HINT_LORA.r}" if current is None else f"a smaller LoRA rank (--lora-r {HINT_LORA.r})"
        )
        for micro, ac, extra in (
            (micro_batch_size, False, ""),
            (1, True, " --micro-batch-size 1 --activation-checkpointing"),
        ):
            lora = estimate_bytes(spec, micro, world, sharded, ac, trainable=hint_trainable)
            if lora["total"] <= budget:
                helps.append(f"{flag}{extra} (about {lora['total'] / GIB:.1f} GiB)")
                break
    if not helps:
        # FSDP shards weights, grads and optimizer state over GPUs of this size (or, on a CPU host, of 80 GiB).
        gpu_budget = budget if gpu else int(GPU_GIB_FOR_HINT * GIB * HEADROOM)
        on = "devices of this size" if gpu else f"{GPU_GIB_FOR_HINT} GiB GPUs"
        if gpu_budget > smallest["activations"]:
            unsharded = estimate_bytes(spec, 1, 1, False, True)
            states = unsharded["weights"] + unsharded["grads"] + unsharded["optimizer_state"]
            ranks = -(-states // (gpu_budget - smallest["activations"]))
            if ranks >= 2 and not (sharded and ranks <= world):  # FSDP on one process shards nothing
                helps.append(
                    f"--nproc {ranks} --strategy fsdp --micro-batch-size 1 --activation-checkpointing on {on}"
                )
            elif not gpu:
                helps.append(
                    f"--micro-batch-size 1 --activation-checkpointing on one {GPU_GIB_FOR_HINT} GiB GPU"
                )
    helps.append("a device with more memory, or a smaller model")
    return helps
