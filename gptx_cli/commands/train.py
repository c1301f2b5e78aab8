"""`gptx train` and `gptx continue-pretrain`: parse ModelZoo-style run flags, call `train.trainer.train`.

Typer and the standard library only at module level; torch is imported by the library when it runs.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import typer

_CONFIG = typer.Argument(..., help="ModelZoo YAML config (trainer or legacy layout).", show_default=False)


def _run(
    config: Path,
    overrides: list[str],
    nproc: int | None,
    lora: tuple[Any, Any] = (None, None),
    **options: Any,
) -> None:
    """Load the config (errors surface once, before any launch), then train here or on `nproc` processes."""
    from gptx_cli.config import load_run_spec
    from gptx_cli.config.flags import check_train_flags
    from gptx_cli.train import parallel

    check_train_flags(
        {
            "--max-steps": options.get("max_steps"),
            "--micro-batch-size": options.get("micro_batch_size"),
            "--strategy": options.get("strategy"),
            "--target-device": options.get("target_device"),
            "--nproc": nproc,
        }
    )
    spec = load_run_spec(config, overrides=overrides)
    if os.environ.get("RANK", "0") == "0":  # once, not per torchrun process
        for warning in spec.warnings:  # keys accepted without effect (config/compat.py): never silent
            typer.echo(warning, err=True)
    if lora != (None, None):  # --lora-r / --lora-alpha: ModelZoo's Lora callback, written for you
        from gptx_cli.model.lora_config import add_lora_shortcut, lora_from_raw

        add_lora_shortcut(spec.raw, *lora)
        lora_from_raw(spec.raw, "--lora-r/--lora-alpha")
    if nproc is not None and nproc > 1 and not parallel.under_torchrun():
        from gptx_cli.train.lock import model_dir_lock
        from gptx_cli.train.trainer import TrainOptions, preflight

        preflight(spec, TrainOptions(**options), nproc)
        with model_dir_lock(options.get("model_dir") or spec.model_dir):  # held for the ranks too
            code = parallel.launch(nproc, parallel.strip_launch_flags(sys.argv[1:]))
        raise typer.Exit(code)
    from gptx_cli.train.trainer import TrainOptions, train

    result = train(spec, TrainOptions(**options))
    if result.stopped_by != "completed" and os.environ.get("RANK", "0") == "0":
        typer.echo(f"stopped at step {result.end_step}; resume with the same command", err=True)


def train_cmd(
    config: Path = _CONFIG,
    model_dir: str | None = typer.Option(
        None, "--model-dir", "--model_dir", help="Overrides the config's model_dir."
    ),
    checkpoint_path: str | None = typer.Option(
        None,
        "--checkpoint-path",
        "--checkpoint_path",
        help="Checkpoint to start from (default: the latest in model_dir).",
    ),
    load_checkpoint_states: str | None = typer.Option(
        None,
        "--load-checkpoint-states",
        "--load_checkpoint_states",
        help="What to load from the checkpoint: all (default) or a comma list of "
        "model,optimizer,lr_scheduler,grad_scaler,rng,dataloader,global_step.",
    ),
    max_steps: int | None = typer.Option(
        None, "--max-steps", "--max_steps", help="Train until this global step."
    ),
    target_device: str | None = typer.Option(
        None, "--target-device", "--target_device", help="CPU or GPU (default: from backend_type)."
    ),
    overrides: list[str] = typer.Option(
        [], "--set", "--override", help="Config override key.path=value (repeatable), e.g. loop.max_steps=10."
    ),
    compile_: bool = typer.Option(False, "--compile", help="torch.compile the model."),
    activation_checkpointing: bool = typer.Option(
        False, "--activation-checkpointing", "--activation_checkpointing", help="Recompute block activations."
    ),
    nproc: int | None = typer.Option(
        None, "--nproc", "--nproc-per-node", "--nproc_per_node", help="Train on N local processes (torchrun)."
    ),
    strategy: str | None = typer.Option(
        None, "--strategy", help="ddp or fsdp (FSDP2) with several processes."
    ),
    micro_batch_size: int | None = typer.Option(
        None,
        "--micro-batch-size",
        "--micro_batch_size",
        help="Rows per forward pass; the rest is accumulated.",
    ),
    lora_r: int | None = typer.Option(
        None,
        "--lora-r",
        help="Train LoRA adapters of this rank (ModelZoo's Lora callback, all target modules).",
    ),
    lora_alpha: float | None = typer.Option(None, "--lora-alpha", help="LoRA alpha (default: the rank)."),
    no_verify: bool = typer.Option(
        False, "--no-verify", help="Skip checking the weight files against the checksums in gptx.json."
    ),
    allow_incomplete_data: bool = typer.Option(
        False,
        "--allow-incomplete",
        help="Read data dirs without data_params.json (an unfinished preprocess).",
    ),
    fp8: bool = typer.Option(
        False, "--fp8", help="FP8 matmuls in the blocks (torchao float8, rowwise; H100/H200 only)."
    ),
) -> None:
    """Train a model from a ModelZoo config (resumes from the latest checkpoint in model_dir).

    Example: gptx train configs/tiny_neox.yaml --max-steps 20 --set train_dataloader.batch_size=4
    """
    from gptx_cli.checksum import skip_verification

    skip_verification(no_verify)
    from gptx_cli.data.loader import allow_incomplete

    allow_incomplete(allow_incomplete_data)
    _run(
        config,
        overrides,
        nproc,
        model_dir=model_dir,
        checkpoint_path=checkpoint_path,
        load_checkpoint_states=load_checkpoint_states,
        max_steps=max_steps,
        target_device=target_device,
        compile=compile_ or None,
        activation_checkpointing=activation_checkpointing or None,
        strategy=strategy,
        micro_batch_size=micro_batch_size,
        lora=(lora_r, lora_alpha),
        fp8=fp8,
    )


def continue_pretrain_cmd(
    config: Path = _CONFIG,
    checkpoint_path: str = typer.Option(
        ...,
        "--checkpoint-path",
        "--checkpoint_path",
        help="gptx checkpoint or Hugging Face GPT-J / GPT-NeoX directory whose weights to start from.",
    ),
    model_dir: str | None = typer.Option(
        None, "--model-dir", "--model_dir", help="Overrides the config's model_dir."
    ),
    max_steps: int | None = typer.Option(
        None, "--max-steps", "--max_steps", help="Train until this global step."
    ),
    target_device: str | None = typer.Option(None, "--target-device", "--target_device", help="CPU or GPU."),
    overrides: list[str] = typer.Option([], "--set", "--override", help="Config override key.path=value."),
    compile_: bool = typer.Option(False, "--compile", help="torch.compile the model."),
    activation_checkpointing: bool = typer.Option(
        False, "--activation-checkpointing", "--activation_checkpointing", help="Recompute block activations."
    ),
    nproc: int | None = typer.Option(
        None, "--nproc", "--nproc-per-node", "--nproc_per_node", help="Processes."
    ),
    strategy: str | None = typer.Option(None, "--strategy", help="ddp or fsdp (FSDP2)."),
    micro_batch_size: int | None = typer.Option(None, "--micro-batch-size", "--micro_batch_size"),
    lora_r: int | None = typer.Option(
        None,
        "--lora-r",
        help="Train LoRA adapters of this rank (ModelZoo's Lora callback, all target modules).",
    ),
    lora_alpha: float | None = typer.Option(None, "--lora-alpha", help="LoRA alpha (default: the rank)."),
    no_verify: bool = typer.Option(
        False, "--no-verify", help="Skip checking the weight files against the checksums in gptx.json."
    ),
    allow_incomplete_data: bool = typer.Option(
        False,
        "--allow-incomplete",
        help="Read data dirs without data_params.json (an unfinished preprocess).",
    ),
) -> None:
    """Continue pretraining from a checkpoint's weights: step 0, fresh optimizer and schedule.

    Example: gptx continue-pretrain configs/params_gptj_6B_TRC2.yaml --checkpoint-path ./gpt-j-6b
    """
    from gptx_cli.checksum import skip_verification

    skip_verification(no_verify)
    from gptx_cli.data.loader import allow_incomplete

    allow_incomplete(allow_incomplete_data)
    _run(
        config,
        overrides,
        nproc,
        model_dir=model_dir,
        checkpoint_path=checkpoint_path,
        max_steps=max_steps,
        target_device=target_device,
        compile=compile_ or None,
        activation_checkpointing=activation_checkpointing or None,
        strategy=strategy,
        micro_batch_size=micro_batch_size,
        continue_pretrain=True,
        lora=(lora_r, lora_alpha),
    )
