"""`gptx train` and `gptx continue-pretrain`: parse ModelZoo-style run flags, call `train.trainer.train`.

The two commands share their flags (declared once in commands/options.py) and `_run`; the signatures are
the CLI and the parameters reach `TrainOptions` by name. Typer and the standard library only at module
level; torch is imported by the library when it runs.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import sys
from typing import Any

import typer

from gptx_cli.commands.options import (
    ActivationCheckpointing,
    AllowIncomplete,
    CheckpointPath,
    Compile,
    Config,
    LoraAlpha,
    LoraR,
    LoraSaveBase,
    MaxRestarts,
    MaxSteps,
    MicroBatchSize,
    ModelDir,
    Nnodes,
    NodeRank,
    NoVerify,
    Nproc,
    Overrides,
    RdzvEndpoint,
    Strategy,
    SyncCheckpoints,
    TargetDevice,
    fields_of,
)


def _run(
    config: Any,
    overrides: list[str] | None,
    nproc: int | None,
    max_restarts: int,
    nnodes: int,
    node_rank: int | None,
    rdzv_endpoint: str | None,
    lora_r: int | None,
    lora_alpha: float | None,
    no_verify: bool,
    allow_incomplete: bool,
    **params: Any,
) -> None:
    """Load the config (errors surface once, before any launch), then train here or on `nproc` processes.
    Flag and config errors come before torch is imported: a typo costs a fraction of a second."""
    from gptx_cli import distributed
    from gptx_cli.checksum import skip_verification
    from gptx_cli.config import load_run_spec
    from gptx_cli.config.flags import check_train_flags
    from gptx_cli.data.loader import allow_incomplete as allow_incomplete_data

    skip_verification(no_verify)
    allow_incomplete_data(allow_incomplete)
    check_train_flags(
        {
            "--max-steps": params.get("max_steps"),
            "--micro-batch-size": params.get("micro_batch_size"),
            "--strategy": params.get("strategy"),
            "--target-device": params.get("target_device"),
        }
    )
    spec = load_run_spec(config, overrides=overrides or ())
    if os.environ.get("RANK", "0") == "0":  # once, not per torchrun process
        for warning in spec.warnings:  # keys accepted without effect (config/compat.py): never silent
            typer.echo(warning, err=True)
    if (lora_r, lora_alpha) != (None, None):  # ModelZoo's Lora callback, written for you
        from gptx_cli.config.lora import add_lora_shortcut, lora_from_raw

        note = add_lora_shortcut(spec.raw, lora_r, lora_alpha)
        lora_from_raw(spec.raw, "--lora-r/--lora-alpha")
        if note and os.environ.get("RANK", "0") == "0":
            typer.echo(f"note: {note}")
    from gptx_cli.train.trainer import TrainOptions  # torch from here on

    options = TrainOptions(**fields_of(TrainOptions, params))
    launch_opts = distributed.LaunchOptions(nproc or 1, nnodes, node_rank, rdzv_endpoint, max_restarts)
    if (launch_opts.nproc > 1 or nnodes > 1 or max_restarts) and not distributed.under_torchrun():
        from gptx_cli.train.launch import launch
        from gptx_cli.train.lock import model_dir_lock
        from gptx_cli.train.trainer import preflight

        preflight(spec, options, launch_opts.nproc * nnodes)
        lead = node_rank in (None, 0)  # node 0 holds the lock for every node's ranks (a shared model_dir)
        with model_dir_lock(options.model_dir or spec.model_dir) if lead else contextlib.nullcontext():
            code = launch(sys.argv[1:], launch_opts)
        if code == distributed.REQUEUE_EXIT_CODE:
            typer.echo(
                f"checkpointed after SIGUSR1; exit code {code}: requeue the same command to resume", err=True
            )
        raise typer.Exit(code)
    from gptx_cli.train.trainer import train

    result = train(spec, options)
    if result.stopped_by != "completed" and os.environ.get("RANK", "0") == "0":
        typer.echo(f"stopped at step {result.end_step}; resume with the same command", err=True)
    if result.stop_signal == "SIGUSR1":
        raise typer.Exit(distributed.REQUEUE_EXIT_CODE)  # checkpointed: requeue me


def train_cmd(
    config: Config,
    model_dir: ModelDir = None,
    checkpoint_path: CheckpointPath = None,
    load_checkpoint_states: str | None = typer.Option(
        None,
        "--load-checkpoint-states",
        "--load_checkpoint_states",
        help="What to load from the checkpoint: all (default) or a comma list of "
        "model,optimizer,lr_scheduler,grad_scaler,rng,dataloader,global_step.",
    ),
    max_steps: MaxSteps = None,
    target_device: TargetDevice = None,
    overrides: Overrides = None,
    compile: Compile = False,
    activation_checkpointing: ActivationCheckpointing = False,
    nproc: Nproc = None,
    max_restarts: MaxRestarts = 0,
    nnodes: Nnodes = 1,
    node_rank: NodeRank = None,
    rdzv_endpoint: RdzvEndpoint = None,
    strategy: Strategy = None,
    micro_batch_size: MicroBatchSize = None,
    lora_r: LoraR = None,
    lora_alpha: LoraAlpha = None,
    lora_save_base: LoraSaveBase = False,
    sync_checkpoints: SyncCheckpoints = False,
    no_verify: NoVerify = False,
    allow_incomplete: AllowIncomplete = False,
    fp8: bool = typer.Option(
        False, "--fp8", help="FP8 matmuls in the blocks (torchao float8, rowwise; H100/H200 only)."
    ),
) -> None:
    """Train a model from a ModelZoo config (resumes from the latest checkpoint in model_dir).

    Example: gptx train configs/tiny_neox.yaml --max-steps 20 --set train_dataloader.batch_size=4
    """
    _run(**locals())


def continue_pretrain_cmd(**params: Any) -> None:
    """Continue pretraining from a checkpoint's weights: step 0, fresh optimizer and schedule.

    Example: gptx continue-pretrain configs/params_gptj_6B_TRC2.yaml --checkpoint-path ./gpt-j-6b
    """
    _run(**params, continue_pretrain=True)


def _continue_pretrain_signature() -> inspect.Signature:
    """train's flags, with --checkpoint-path required (the weights to start from) and no
    --load-checkpoint-states (weights only): the flags are written once, in train_cmd."""
    train = inspect.signature(train_cmd, eval_str=True)
    params = [p for p in train.parameters.values() if p.name != "load_checkpoint_states"]
    params = [
        p.replace(default=inspect.Parameter.empty) if p.name == "checkpoint_path" else p for p in params
    ]
    params.sort(key=lambda p: p.default is not inspect.Parameter.empty)  # required ones first
    return train.replace(parameters=params)


continue_pretrain_cmd.__signature__ = _continue_pretrain_signature()  # type: ignore[attr-defined]
