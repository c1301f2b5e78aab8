"""What `gptx eval` was asked to do, and everything about it that can be checked without a model: the
flags, the config and the task files. No torch here, so a mistyped flag, a broken config or a malformed
task line is answered before torch is imported (and, under `--nproc`, before any process starts)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gptx_cli.config import load_run_spec
from gptx_cli.errors import UsageError
from gptx_cli.eval.tasks import Task, load_task
from gptx_cli.fsutil import check_output


@dataclass
class EvalOptions:
    """What `gptx eval` was asked to do (the CLI fills this; tests and scripts may too)."""

    config: str | None = None
    checkpoint_path: str | None = None
    all_checkpoints: bool = False
    eval_steps: int | None = None
    tasks: Sequence[str] = ()
    tasks_dir: str | None = None
    limit: float | None = None  # a count, or a fraction below 1.0 (the harness's --limit)
    batch_size: int = 8
    max_length: int | None = None  # context for tasks (default: the model's max_position_embeddings)
    extrapolate: bool = False  # allow max_length past the model's max_position_embeddings
    bootstrap_iters: int = 100000  # the harness's default; 0 skips the bootstrapped stderrs
    log_samples: bool = False
    num_fewshot: int = 0
    tokenizer: str | None = None
    device: str = "auto"
    dtype: str = "float32"
    model_dir: str | None = None
    output_dir: str | None = None
    overrides: Sequence[str] = ()
    seed: int = 1234
    write: bool = True
    overwrite: bool = False  # replace an earlier result file of the same checkpoint (--overwrite)


Prepared = tuple[Any, list[Task]]  # (the RunSpec or None, the loaded tasks)


def prepare(opts: EvalOptions) -> Prepared:
    """Check the options, load the config's RunSpec (if any) and the tasks; raise on the first problem."""
    if opts.config is None and not opts.tasks:
        raise UsageError("nothing to evaluate: give a CONFIG (validation data) and/or --tasks")
    if opts.eval_steps is not None and opts.eval_steps < 1:
        raise UsageError(f"--eval-steps must be at least 1, got {opts.eval_steps}")
    if opts.limit is not None and opts.limit <= 0:
        raise UsageError(f"--limit must be > 0, got {opts.limit}")
    if opts.limit is not None and opts.limit >= 1.0 and opts.limit != int(opts.limit):
        raise UsageError(f"--limit {opts.limit}: a count must be whole (a fraction must be below 1.0)")
    if opts.output_dir is not None:
        check_output(opts.output_dir, what="--output-dir", kind="dir")
    if opts.bootstrap_iters < 0:
        raise UsageError(f"--bootstrap-iters must be >= 0, got {opts.bootstrap_iters}")
    spec = None
    if opts.config is not None:
        spec = load_run_spec(opts.config, overrides=opts.overrides)
        if spec.val_data is None:
            if not opts.tasks:
                raise UsageError(
                    f"{opts.config}: no validation data (validate.val_dataloader or eval_input)",
                    hint="add one, or pass --tasks",
                )
    return spec, [load_task(t, opts.tasks_dir) for t in opts.tasks]
