"""`gptx eval`: ModelZoo validate / validate_all metrics and zero-shot tasks (docs/eval.md, docs/tasks.md)."""

from __future__ import annotations

import json
import os
from typing import Optional

import typer


def _split_tasks(values: list[str] | None) -> list[str]:
    """--tasks may repeat and each value may be a comma-separated list."""
    return [t.strip() for v in values or [] for t in v.split(",") if t.strip()]


def eval_cmd(
    config: Optional[str] = typer.Argument(
        None, help="ModelZoo YAML whose validation dataloader to evaluate."
    ),
    checkpoint_path: Optional[str] = typer.Option(
        None,
        "--checkpoint-path",
        "--checkpoint_path",
        help="A gptx checkpoint or a Hugging Face model directory.",
    ),
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
        None, "--limit", help="Score only the first N documents of each task (below 1.0: that fraction)."
    ),
    max_length: Optional[int] = typer.Option(
        None, "--max-length", "--max_length", help="Context for tasks (default: max_position_embeddings)."
    ),
    bootstrap_iters: int = typer.Option(
        100000,
        "--bootstrap-iters",
        "--bootstrap_iters",
        help="Bootstrap draws for perplexity stderr (0: none).",
    ),
    log_samples: bool = typer.Option(
        False, "--log-samples", "--log_samples", help="Write per-document results as JSONL next to the JSON."
    ),
    nproc: Optional[int] = typer.Option(
        None, "--nproc", "--nproc-per-node", "--nproc_per_node", help="Evaluate on N local processes."
    ),
    batch_size: int = typer.Option(
        8, "--batch-size", "--batch_size", help="Sequences per forward pass for tasks."
    ),
    num_fewshot: int = typer.Option(
        0, "--num-fewshot", "--num_fewshot", help="Solved examples before each item."
    ),
    tokenizer: Optional[str] = typer.Option(
        None, "--tokenizer", help="Tokenizer for tasks (default: the one the checkpoint records)."
    ),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:1, ..."),
    dtype: str = typer.Option("float32", "--dtype", help="float32, bfloat16 or float16."),
    model_dir: Optional[str] = typer.Option(
        None, "--model-dir", "--model_dir", help="Override the config's model_dir."
    ),
    output_dir: Optional[str] = typer.Option(
        None, "--output-dir", "--output_dir", help="Where the JSON results go (default: model_dir/eval)."
    ),
    override: Optional[list[str]] = typer.Option(
        None,
        "--set",
        "--override",
        "-o",
        help="Config override key=value (repeatable), e.g. -o val_dataloader.batch_size=4.",
    ),
    seed: int = typer.Option(
        1234, "--seed", help="Seed of the few-shot example sampler (the harness's 1234)."
    ),
    output_format: str = typer.Option("table", "--format", help="table, or json (to stdout, for pipelines)."),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace an earlier result file of the same checkpoint."
    ),
    no_verify: bool = typer.Option(
        False, "--no-verify", help="Skip checking the weight files against the checksums in gptx.json."
    ),
    allow_incomplete_data: bool = typer.Option(
        False,
        "--allow-incomplete",
        help="Read data dirs without data_params.json (an unfinished preprocess).",
    ),
) -> None:
    """Evaluate a checkpoint: eval loss, lm_perplexity and accuracy on the config's validation data, and
    zero-shot tasks scored as lm-evaluation-harness does.

    Example: gptx eval configs/demo_neox.yaml --checkpoint-path model_dir/demo_neox
    """
    import sys

    from gptx_cli.checksum import skip_verification

    skip_verification(no_verify)
    from gptx_cli.data.loader import allow_incomplete

    allow_incomplete(allow_incomplete_data)
    from gptx_cli.config.flags import check_at_least, check_config_flag
    from gptx_cli.errors import UsageError
    from gptx_cli.eval.evaluate import EvalOptions, format_table, run_eval
    from gptx_cli.train import parallel

    check_config_flag("--eval-steps", eval_steps)
    check_at_least("--batch-size", batch_size, 1)
    check_at_least("--limit", limit, 1)
    check_at_least("--num-fewshot", num_fewshot, 0)
    if output_format not in ("table", "json"):
        raise UsageError(f"--format must be table or json, got {output_format!r}")
    if nproc is not None and nproc < 1:
        raise UsageError(f"--nproc must be at least 1 (got {nproc})")
    if nproc is not None and nproc > 1 and not parallel.under_torchrun():
        code = parallel.launch(nproc, parallel.strip_launch_flags(sys.argv[1:]))
        raise typer.Exit(code)
    opts = EvalOptions(
        config=config,
        checkpoint_path=checkpoint_path,
        all_checkpoints=all_checkpoints,
        eval_steps=eval_steps,
        tasks=_split_tasks(tasks),
        tasks_dir=tasks_dir,
        limit=limit,
        batch_size=batch_size,
        max_length=max_length,
        bootstrap_iters=bootstrap_iters,
        log_samples=log_samples,
        num_fewshot=num_fewshot,
        tokenizer=tokenizer,
        device=device,
        dtype=dtype,
        model_dir=model_dir,
        output_dir=output_dir,
        overrides=override or (),
        seed=seed,
        overwrite=overwrite,
    )
    reports = run_eval(opts)
    if parallel.under_torchrun() and int(os.environ.get("RANK", "0")) != 0:
        return  # rank 0 prints for all
    if output_format == "json":
        payload = [r.to_dict() for r in reports]
        typer.echo(json.dumps(payload if all_checkpoints else payload[0], indent=2))
    else:
        typer.echo(format_table(reports))
