"""`gptx lm-eval`: lm-evaluation-harness on a gptx checkpoint, like ModelZoo's `cszoo lm_eval` (docs/lm-eval.md)."""

from __future__ import annotations

import typer

from gptx_cli.commands.options import CheckpointPath, Dtype, Extrapolate, MaxLength, Tokenizer


def lm_eval_cmd(
    ctx: typer.Context,
    checkpoint_path: CheckpointPath,
    tokenizer: Tokenizer = None,
    dtype: Dtype = "float32",
    max_length: MaxLength = None,
    extrapolate: Extrapolate = False,
    online: bool = typer.Option(
        False, "--online", help="Let the harness download datasets from the hub (default: offline)."
    ),
) -> None:
    """Run lm-evaluation-harness on a gptx checkpoint; every other argument goes to the harness
    (--tasks, --num_fewshot, --limit, --batch_size auto, --device, --log_samples, --output_path,
    --include_path for local task YAMLs, ...). Needs the optional lm-eval package (the gptx lm-eval extra).

    Example: gptx lm-eval --checkpoint-path model_dir/demo_neox --tasks lambada_openai --batch_size auto
    """
    from gptx_cli.eval.lm_eval_adapter import run_lm_eval

    run_lm_eval(
        str(checkpoint_path),  # required: Typer never passes None
        list(ctx.args),
        tokenizer=tokenizer,
        dtype=dtype,
        max_length=max_length,
        extrapolate=extrapolate,
        online=online,
    )
