"""Opt-in FP8 training (`gptx train --fp8`, off by default): the blocks' linear layers run their matmuls
in float8 with torchao's rowwise scaling recipe (`torchao.float8`), on H100/H200-class GPUs (compute
capability 9.0+). Weights, optimizer states and the fused LM head + loss stay as they are; only the
qkv / out / fc_in / fc_out matmuls change precision, so the loss differs slightly from bf16.

`check_fp8(device)` fails fast with a one-line error when the GPU or torchao is missing;
`apply_fp8(model)` swaps the layers (before compilation and DDP/FSDP2 wrapping) and returns how many.
"""

from __future__ import annotations

import importlib.util

import torch

from gptx_cli.errors import UsageError

RECIPE = "rowwise"


def check_fp8(device: torch.device) -> None:
    if device.type != "cuda":
        raise UsageError(f"--fp8: FP8 training needs an H100 or H200 GPU; this run is on {device}")
    capability = torch.cuda.get_device_capability(device)
    if capability < (9, 0):
        name = torch.cuda.get_device_name(device)
        raise UsageError(
            f"--fp8: FP8 training needs an H100 or H200 GPU (compute capability 9.0+); {name} has "
            f"{capability[0]}.{capability[1]}"
        )
    if importlib.util.find_spec("torchao") is None:
        raise UsageError("--fp8: torchao is not installed (pip install 'gptx[fp8]' or torchao)")


def apply_fp8(model: torch.nn.Module) -> int:
    """Convert the blocks' nn.Linear layers (both dimensions multiples of 16) to torchao Float8Linear."""
    from torchao.float8 import Float8LinearConfig, convert_to_float8_training

    def eligible(module: torch.nn.Module, fqn: str) -> bool:
        return (
            type(module) is torch.nn.Linear  # not LoRA's adapted layers
            and fqn.startswith("layers.")
            and module.in_features % 16 == 0
            and module.out_features % 16 == 0
        )

    before = sum(isinstance(m, torch.nn.Linear) for m in model.modules())
    convert_to_float8_training(
        model, config=Float8LinearConfig.from_recipe_name(RECIPE), module_filter_fn=eligible
    )
    after = sum(type(m) is torch.nn.Linear for m in model.modules())
    return before - after
