"""`gptx eval`: ModelZoo validate / validate_all metrics and zero-shot tasks (docs/eval.md, docs/tasks.md)."""

from __future__ import annotations

import json
import os
from typing import Optional

import typer

from gptx_cli.commands.options import (
    AllowIncomplete,
    CheckpointPath,
    Device,
    Dtype,
    Extrapolate,
    MaxLength,
    ModelDir,
    NoVerify,
    Nproc,
    Overrides,
    Tokenizer,
    fields_of,
)


def _split_tasks(values: list[str] | None) -> list[str]:
    """--tasks may repeat and each value may be a comma-separated list."""
    return [t.strip() for v in values or [] for t in v.split(",") if t.strip()]


def eval_cmd(
    config: Optional[str] = typer.Argument(
        None, help="ModelZoo YAML whose validation dataloader to evaluate."
    ),
    checkpoint_path: CheckpointPath = None,
    all_checkpoints: bool = typer.Option(
        False, "--all", help="Evaluate every checkpoint in model_dir, in step order (ModelZoo validate_all)."
    ),
    eval_steps: Optional[int] = typer.Option(
        None, "--eval-steps", "--eval_steps", help="Batches to evaluate (default: loop.eval_steps, else all)."
    ),
    tasks: Optional[list[str]] = typer.Option(
        None, "--tasks", help="Task jsonl files or names (repeat, or comma-separate). See docs/tasks.md."
    ),
    tasks_dir: Optional[str] = typer.Option(
        None, "--tasks-dir", "--tasks_dir", help="Where task names are found."
    ),
    limit: Optional[float] = typer.Option(
        None,
        "--limit",
        help="Score only the first N documents of each task (below 1.0: that fraction, as lm-eval).",
    ),
    max_length: MaxLength = None,
    extrapolate: Extrapolate = False,
    bootstrap_iters: int = typer.Option(
        100000,
        "--bootstrap-iters",
        "--bootstrap_iters",
        help="Bootstrap draws for perplexity stderr (0: none).",
    ),
    log_samples: bool = typer.Option(
        False, "--log-samples", "--log_samples", help="Write per-document results as JSONL next to the JSON."
    ),
    nproc: Nproc = None,
    batch_size: int = typer.Option(
        8, "--batch-size", "--batch_size", help="Sequences per forward pass for tasks."
    ),
    num_fewshot: int = typer.Option(
        0, "--num-fewshot", "--num_fewshot", help="Solved examples before each item."
    ),
    tokenizer: Tokenizer = None,
    device: Device = "auto",
    dtype: Dtype = "float32",
    model_dir: ModelDir = None,
    output_dir: Optional[str] = typer.Option(
        None,
        "--output-dir",
        "--output_dir",
        help="Where the JSON results go (default: eval_results/ beside the checkpoint, in its model_dir).",
    ),
    overrides: Overrides = None,
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace an earlier result file of the same checkpoint."
    ),
    seed: int = typer.Option(
        1234, "--seed", help="Seed of the few-shot example sampler (the harness's 1234)."
    ),
    output_format: str = typer.Option("table", "--format", help="table, or json (to stdout, for pipelines)."),
    no_verify: NoVerify = False,
    allow_incomplete: AllowIncomplete = False,
) -> None:
    """Evaluate a checkpoint: eval loss, lm_perplexity and accuracy on the config's validation data, and
    zero-shot tasks scored as lm-evaluation-harness does.

    Example: gptx eval configs/demo_neox.yaml --checkpoint-path model_dir/demo_neox
    """
    import sys

    from gptx_cli import distributed
    from gptx_cli.checksum import skip_verification
    from gptx_cli.data.loader import allow_incomplete as allow_incomplete_data
    from gptx_cli.errors import UsageError
    from gptx_cli.eval.options import EvalOptions, prepare

    skip_verification(no_verify)
    allow_incomplete_data(allow_incomplete)
    if output_format not in ("table", "json"):
        raise UsageError(f"--format must be table or json, got {output_format!r}")
    opts = EvalOptions(
        **fields_of(EvalOptions, locals(), tasks=_split_tasks(tasks), overrides=overrides or ())
    )
    prepared = prepare(opts)  # flags, config and task files, before torch is imported
    if nproc is not None and nproc > 1 and not distributed.under_torchrun():
        from gptx_cli.train.launch import launch

        code = launch(sys.argv[1:], distributed.LaunchOptions(nproc))
        raise typer.Exit(code)
    from gptx_cli.eval.evaluate import format_table, run_eval

    reports = run_eval(opts, prepared=prepared)
    if distributed.under_torchrun() and int(os.environ.get("RANK", "0")) != 0:
        return  # rank 0 prints for all
    if output_format == "json":
        payload = [r.to_dict() for r in reports]
        typer.echo(json.dumps(payload if all_checkpoints else payload[0], indent=2))
        for r in reports:
            if r.output:
                typer.echo(f"wrote {r.output}", err=True)
    else:
        typer.echo(format_table(reports))
