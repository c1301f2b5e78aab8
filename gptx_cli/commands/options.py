"""Command-line options that more than one command takes, each declared once (flags, type, help).

A command's signature is its CLI, as in litgpt: `def train_cmd(config: Config, model_dir: ModelDir = None,
...)`, and the command hands its parameters on by name (`fields_of`), so a flag is written once.
Typer only: importing this costs `gptx --help` nothing.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

Config = Annotated[
    Path, typer.Argument(help="ModelZoo YAML config (trainer or legacy layout).", show_default=False)
]
Overrides = Annotated[
    Optional[list[str]],
    typer.Option(
        "--set",
        "--override",
        "-o",
        help="Config override key.path=value (repeatable), e.g. loop.max_steps=10 or model.hidden_size=64.",
    ),
]
ModelDir = Annotated[
    Optional[str], typer.Option("--model-dir", "--model_dir", help="Overrides the config's model_dir.")
]
CheckpointPath = Annotated[
    Optional[str],
    typer.Option(
        "--checkpoint-path",
        "--checkpoint_path",
        help="A gptx checkpoint, a model_dir (its latest checkpoint) or a Hugging Face model directory.",
    ),
]
Nproc = Annotated[
    Optional[int],
    typer.Option(
        "--nproc", "--nproc-per-node", "--nproc_per_node", help="Run on N local processes (torchrun)."
    ),
]
NoVerify = Annotated[
    bool,
    typer.Option("--no-verify", help="Skip checking the weight files against the checksums in gptx.json."),
]
AllowIncomplete = Annotated[
    bool,
    typer.Option(
        "--allow-incomplete", help="Read data dirs without data_params.json (an unfinished preprocess)."
    ),
]
Tokenizer = Annotated[
    Optional[str], typer.Option("--tokenizer", help="Tokenizer (default: the one the checkpoint records).")
]
Device = Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:1, ...")]
Dtype = Annotated[str, typer.Option("--dtype", help="float32, bfloat16 or float16.")]
MaxLength = Annotated[
    Optional[int],
    typer.Option("--max-length", "--max_length", help="Context length (default: max_position_embeddings)."),
]

# train and continue-pretrain
MaxSteps = Annotated[
    Optional[int], typer.Option("--max-steps", "--max_steps", help="Train until this global step.")
]
TargetDevice = Annotated[
    Optional[str],
    typer.Option("--target-device", "--target_device", help="CPU or GPU (default: from backend_type)."),
]
Compile = Annotated[bool, typer.Option("--compile", help="torch.compile the model.")]
ActivationCheckpointing = Annotated[
    bool,
    typer.Option(
        "--activation-checkpointing", "--activation_checkpointing", help="Recompute block activations."
    ),
]
Strategy = Annotated[
    Optional[str], typer.Option("--strategy", help="ddp or fsdp (FSDP2) with several processes.")
]
MicroBatchSize = Annotated[
    Optional[int],
    typer.Option(
        "--micro-batch-size", "--micro_batch_size", help="Rows per forward pass; the rest is accumulated."
    ),
]
LoraR = Annotated[
    Optional[int],
    typer.Option(
        "--lora-r", help="Train LoRA adapters of this rank (ModelZoo's Lora callback, all target modules)."
    ),
]
LoraAlpha = Annotated[Optional[float], typer.Option("--lora-alpha", help="LoRA alpha (default: the rank).")]
LoraSaveBase = Annotated[
    bool,
    typer.Option(
        "--lora-save-base",
        help="LoRA: checkpoints hold the frozen base weights too, not only the adapters, so they work "
        "without the base model (gptx extension).",
    ),
]


def fields_of(cls: Any, params: dict[str, Any], **values: Any) -> dict[str, Any]:
    """The command's parameters (then `values`) that are fields of the dataclass `cls`, by name."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in {**params, **values}.items() if k in names}
