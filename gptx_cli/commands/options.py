"""Command-line options that more than one command takes, each declared once (flags, type, help).

A command's signature is its CLI, as in litgpt: `def train_cmd(config: Config, model_dir: ModelDir = None,
...)`, and the command hands its parameters on by name (`fields_of`), so a flag is written once.
Typer only: importing this costs `gptx --help` nothing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from gptx_cli.config.flags import ANY, COUNT, NON_NEGATIVE, POSITIVE, Range, check_number

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
MaxRestarts = Annotated[
    int,
    typer.Option(
        "--max-restarts",
        help="With --nproc: restart the ranks up to K times when one dies; they resume from the last "
        "checkpoint (torchrun's elastic agent).",
    ),
]
Nnodes = Annotated[
    int, typer.Option("--nnodes", help="With --nproc: the number of nodes (each runs this command).")
]
NodeRank = Annotated[
    Optional[int],
    typer.Option("--node-rank", help="With --nnodes: this node's rank (0 hosts the rendezvous)."),
]
RdzvEndpoint = Annotated[
    Optional[str],
    typer.Option("--rdzv-endpoint", help="With --nnodes: HOST:PORT of node 0, where the ranks meet."),
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
Extrapolate = Annotated[
    bool,
    typer.Option(
        "--extrapolate",
        help="Allow --max-length past the model's max_position_embeddings (untrained positions).",
    ),
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
        "--lora-r",
        help="Train LoRA adapters of this rank (ModelZoo's Lora callback, all target modules; beside a "
        "Lora callback in the config: its r, with its target_modules).",
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

SyncCheckpoints = Annotated[
    bool,
    typer.Option(
        "--sync-checkpoints",
        help="Write each checkpoint before the next step instead of in the background while training "
        "goes on (gptx extension).",
    ),
]


def fields_of(cls: Any, params: dict[str, Any], **values: Any) -> dict[str, Any]:
    """The command's parameters (then `values`) that are fields of the dataclass `cls`, by name."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in {**params, **values}.items() if k in names}


# ---------------------------------------------------------------------------------------------------
# One check for every numeric flag of every command

# Every int / float flag, by its first long name: a flag means the same in every command. A numeric flag
# missing here is a test failure (tests/test_named_errors.py), so none is left unchecked.
NUMBER_RULES: dict[str, Range] = {
    "--batch-size": COUNT,
    "--bootstrap-iters": NON_NEGATIVE,
    "--buffer-len": COUNT,
    "--eval-steps": COUNT,
    "--limit": POSITIVE,  # below 1.0 a fraction of the documents, as lm-eval has it
    "--lora-alpha": POSITIVE,
    "--lora-r": COUNT,
    "--max-length": Range(low=2),  # one token of context and one to score
    "--max-new-tokens": COUNT,
    "--max-seq-length": COUNT,
    "--max-steps": COUNT,
    "--micro-batch-size": COUNT,
    "--min-sequence-len": NON_NEGATIVE,
    "--nproc": COUNT,
    "--nnodes": COUNT,
    "--node-rank": NON_NEGATIVE,
    "--max-restarts": NON_NEGATIVE,
    "--num-fewshot": NON_NEGATIVE,
    "--processes": COUNT,
    "--repetition-penalty": POSITIVE,
    "--samples-per-file": COUNT,
    "--seed": ANY,
    "--sample": NON_NEGATIVE,
    "--shard-mb": POSITIVE,
    "--temperature": NON_NEGATIVE,
    "--top-k": COUNT,
    "--top-p": Range(low=0, high=1, low_open=True),
    "--train-tokenizer": ANY,  # preprocess names the real floor (258: bytes + specials) itself
    "--val-split-ratio": Range(low=0, high=1),
}


def flag_name(param: Any) -> str:
    """A parameter's first long option name (`--max-length`), or its name for an argument."""
    longs = [o for o in getattr(param, "opts", ()) if o.startswith("--")]
    return longs[0] if longs else str(param.name)


def numeric_params(command: Any, path: str = "gptx") -> Iterator[tuple[str, Any]]:
    """(command path, parameter) for each int / float parameter of `command` and its subcommands."""
    for param in command.params:
        if getattr(getattr(param, "type_descriptor", None), "annotation", None) in (int, float):
            yield path, param
    for name, sub in getattr(command, "commands", {}).items():
        yield from numeric_params(sub, f"{path} {name}")


def install_number_checks(command: Any) -> Any:
    """Every numeric parameter of the command tree goes through `check_number` with its NUMBER_RULES
    entry, after Typer has parsed it and before the command runs."""
    for _, param in numeric_params(command):
        flag = flag_name(param)
        rule = NUMBER_RULES.get(flag, ANY)
        inner = param.callback

        def checked(
            ctx: Any, p: Any, value: Any, flag: str = flag, rule: Range = rule, inner: Any = inner
        ) -> Any:
            values = value if isinstance(value, (list, tuple)) else [value]
            for v in values:
                check_number(flag, v, rule)
            return inner(ctx, p, value) if inner is not None else value

        param.callback = checked
    return command
