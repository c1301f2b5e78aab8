"""`gptx lm-eval`: lm-evaluation-harness on a gptx checkpoint, like ModelZoo's `cszoo lm_eval` (docs/lm-eval.md)."""

from __future__ import annotations

from typing import Optional

import typer


def lm_eval_cmd(
    ctx: typer.Context,
    checkpoint_path: str = typer.Option(
        ...,
        "--checkpoint-path",
        "--checkpoint_path",
        help="A gptx checkpoint, a model_dir (its latest checkpoint) or a Hugging Face model directory.",
    ),
    tokenizer: Optional[str] = typer.Option(
        None, "--tokenizer", help="Tokenizer (default: the one the checkpoint records)."
    ),
    dtype: str = typer.Option("float32", "--dtype", help="float32, bfloat16 or float16."),
    max_length: Optional[int] = typer.Option(
        None, "--max-length", "--max_length", help="Context length (default: max_position_embeddings)."
    ),
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
        checkpoint_path,
        list(ctx.args),
        tokenizer=tokenizer,
        dtype=dtype,
        max_length=max_length,
        online=online,
    )
