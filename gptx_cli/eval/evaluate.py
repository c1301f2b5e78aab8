"""`gptx eval`: ModelZoo's validate / validate_all metrics, and zero-shot tasks, for one or all checkpoints.

Metrics over the config's validation dataloader (ModelZoo's names):

- ``loss``: the mean over eval steps of the step loss (what ModelZoo logs as the eval loss);
- ``lm_perplexity``: exp(sum of token cross-entropies / number of loss tokens) over *all* steps, so a
  ragged final batch weighs by its tokens, not as a whole batch;
- ``accuracy``: masked tokens whose argmax equals the label / masked tokens.

The loss comes from `gptx_cli.model.loss.lm_loss`, the function training uses, so train and eval
numbers cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gptx_cli.checkpoint import (
    CONFIG_FILE,
    ModelSource,
    is_gptx_checkpoint,
    latest_checkpoint,
    list_checkpoints,
    resolve,
)
from gptx_cli.config import load_run_spec
from gptx_cli.data.loader import build_dataloader
from gptx_cli.data.tokenizer import load_tokenizer, recorded_tokenizer
from gptx_cli.errors import CheckpointError, DataError, GptxError, UsageError
from gptx_cli.eval.tasks import LoglikelihoodScorer, evaluate_task, load_task
from gptx_cli.fsutil import write_json
from gptx_cli.model.loss import lm_loss
from gptx_cli.model.transformer import parameter_shapes

# Fields that only matter for training: a difference here is neither an error nor worth a warning.
_TRAINING_ONLY_FIELDS = {
    "embedding_dropout_rate",
    "attention_dropout_rate",
    "residual_dropout_rate",
    "initializer_range",
    "embedding_initializer",
    "initializer",
    "output_layer_initializer",
    "ffn_initializer",
    "ffn_output_initializer",
    "mup_base_filter_size",
}


@dataclass
class EvalOptions:
    """What `gptx eval` was asked to do (the CLI fills this; tests and scripts may too)."""

    config: str | None = None
    checkpoint_path: str | None = None
    all_checkpoints: bool = False
    eval_steps: int | None = None
    tasks: Sequence[str] = ()
    tasks_dir: str | None = None
    limit: int | None = None
    batch_size: int = 8
    num_fewshot: int = 0
    tokenizer: str | None = None
    device: str = "auto"
    dtype: str = "float32"
    model_dir: str | None = None
    output_dir: str | None = None
    overrides: Sequence[str] = ()
    seed: int = 1234
    write: bool = True


@dataclass
class LossMetrics:
    loss: float
    lm_perplexity: float
    accuracy: float
    num_tokens: int
    eval_steps: int
    num_samples: int
    tokens_per_second: float

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------------------------------
# Devices, checkpoints, configs


def resolve_device(name: str) -> Any:
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise UsageError(f"--device {name!r}: {err}") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: CUDA is not available on this machine")
    return device


def resolve_dtype(name: str) -> Any:
    import torch

    dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if name not in dtypes:
        raise UsageError(f"--dtype {name!r}: choose one of {', '.join(dtypes)}")
    return dtypes[name]


def compare_model_configs(yaml_cfg: Any, ckpt_cfg: Any, *, config_name: str, checkpoint: str) -> list[str]:
    """Check a checkpoint against the config's `model` section.

    A differing field that changes any parameter's shape (found by building both models on the meta
    device) is an error naming the field; other differences follow the checkpoint and come back as
    warnings. Training-only fields (dropout, initializers) are ignored.
    """

    def effective(cfg: Any, name: str) -> Any:
        # rotary_dim None means "25% of head_dim": compare what the model will use.
        return cfg.resolved_rotary_dim if name == "rotary_dim" else getattr(cfg, name)

    differing = [
        f.name
        for f in dataclasses.fields(yaml_cfg)
        if f.name not in _TRAINING_ONLY_FIELDS and effective(yaml_cfg, f.name) != effective(ckpt_cfg, f.name)
    ]
    if not differing:
        return []
    base = parameter_shapes(ckpt_cfg)
    shape_errors: list[str] = []
    warnings: list[str] = []
    for name in differing:
        yaml_value, ckpt_value = getattr(yaml_cfg, name), getattr(ckpt_cfg, name)
        try:
            changed = parameter_shapes(dataclasses.replace(ckpt_cfg, **{name: yaml_value})) != base
        except (ValueError, TypeError):
            changed = True  # a value the model cannot even be built with
        line = f"model.{name}: {yaml_value!r} in {config_name}, {ckpt_value!r} in the checkpoint"
        (shape_errors if changed else warnings).append(line)
    if shape_errors:
        raise CheckpointError(
            f"checkpoint {checkpoint} does not fit the config's model (shapes differ): "
            + "; ".join(shape_errors)
        )
    return [f"{w} (using the checkpoint's)" for w in warnings]


def resolve_tokenizer(
    checkpoint: str | Path | ModelSource, tokenizer: str | None, data_dirs: Iterable[str] = ()
) -> Any:
    """The tokenizer for a checkpoint, first found of:

    --tokenizer; the one the checkpoint records (gptx.json, or a Hugging Face dir's own tokenizer
    files); the one `gptx preprocess` recorded in data_params.json of the data the checkpoint was
    trained on (its config.yaml) or of `data_dirs` (the eval config's data).
    """
    if tokenizer:
        return load_tokenizer(tokenizer)
    source = checkpoint if isinstance(checkpoint, ModelSource) else resolve(checkpoint)
    if source.tokenizer:
        return load_tokenizer(source.tokenizer)
    dirs = list(data_dirs)
    if source.is_gptx and (source.directory / CONFIG_FILE).is_file():
        try:
            trained = load_run_spec(source.directory / CONFIG_FILE)
        except GptxError:
            trained = None
        if trained is not None:
            dirs = [
                d for spec in (trained.train_data, trained.val_data) if spec for d in spec.data_dir
            ] + dirs
    from_data = recorded_tokenizer(dirs)
    if from_data:
        return load_tokenizer(from_data)
    raise UsageError(
        f"checkpoint {source.directory} records no tokenizer",
        hint="pass --tokenizer (a preset such as gpt2, a file or a dir)",
    )


# --------------------------------------------------------------------------------------------------
# Loss metrics


def loss_metrics(
    model: Any,
    batches: Iterable[dict[str, Any]],
    *,
    device: Any,
    eval_steps: int | None = None,
    loss_scaling: str = "num_tokens",
    loss_weight: float = 1.0,
    source: str = "the eval data",
) -> LossMetrics:
    """ModelZoo eval metrics over `batches` (dicts with input_ids, attention_mask = loss mask, labels)."""
    import torch

    vocab = model.cfg.vocab_size
    # Sums stay on the device and are read once at the end: no host sync per batch.
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # loss, CE sum, loss tokens, correct
    samples = steps = seen_tokens = 0
    start = time.perf_counter()
    with torch.inference_mode():
        for batch in batches:
            if eval_steps is not None and steps >= eval_steps:
                break
            # The range check reads the loader's host copy, before the batch moves to the device.
            top = int(max(batch["input_ids"].max(), batch["labels"].max()))
            if top >= vocab:
                raise DataError(f"{source}: token id {top} is outside the model's vocabulary of {vocab}")
            input_ids = batch["input_ids"].to(device, non_blocking=True)
            labels = batch["labels"].to(device, non_blocking=True)
            mask = batch["attention_mask"].to(device, non_blocking=True)
            out = lm_loss(model, input_ids, labels, mask, loss_scaling=loss_scaling, loss_weight=loss_weight)
            sums += torch.stack([out.loss, out.loss_sum, out.num_tokens, out.num_correct]).to(sums.dtype)
            samples += int(input_ids.shape[0])
            seen_tokens += int(input_ids.numel())
            steps += 1
    loss_total, ce_sum, tokens_f, correct_f = sums.tolist()
    tokens, correct = int(tokens_f), int(correct_f)
    elapsed = time.perf_counter() - start
    if steps == 0:
        raise DataError(f"{source}: the eval set is empty (no batches)")
    if tokens == 0:
        raise DataError(f"{source}: no loss tokens (every attention_mask is zero)")
    mean_ce = ce_sum / tokens
    return LossMetrics(
        loss=loss_total / steps,
        lm_perplexity=math.exp(mean_ce) if mean_ce < 700 else math.inf,
        accuracy=correct / tokens,
        num_tokens=tokens,
        eval_steps=steps,
        num_samples=samples,
        tokens_per_second=seen_tokens / elapsed if elapsed > 0 else 0.0,
    )


# --------------------------------------------------------------------------------------------------
# The command


@dataclass
class CheckpointReport:
    checkpoint: str
    step: int | None
    metrics: dict[str, Any] = field(default_factory=dict)
    tasks: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    output: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "checkpoint": self.checkpoint,
            "step": self.step,
            "metrics": self.metrics,
            "tasks": self.tasks,
            "warnings": self.warnings,
        }


def _checkpoints_to_run(opts: EvalOptions, spec: Any) -> list[Path]:
    model_dir = opts.model_dir or (spec.model_dir if spec else None)
    if opts.all_checkpoints:
        if opts.checkpoint_path:
            raise UsageError(
                "--all evaluates every checkpoint in model_dir; do not also give --checkpoint-path"
            )
        if not model_dir:
            raise UsageError("--all needs a config (or --model-dir) to find model_dir")
        found = list_checkpoints(model_dir)
        if not found:
            raise CheckpointError(
                f"no checkpoints in {model_dir} (looked for checkpoint_<step>/ with gptx.json)"
            )
        return [p for _, p in found]
    if opts.checkpoint_path:
        return [Path(opts.checkpoint_path)]
    if spec is not None and spec.ckpt_path:
        return [Path(spec.ckpt_path)]
    latest = latest_checkpoint(model_dir) if model_dir else None
    if latest is None:
        raise UsageError(
            "no checkpoint to evaluate",
            hint="pass --checkpoint-path, or --all, or train first so model_dir has one",
        )
    return [latest]


def _output_dir(opts: EvalOptions, spec: Any, checkpoint: Path) -> Path | None:
    if opts.output_dir:
        return Path(opts.output_dir)
    if opts.model_dir or spec is not None:
        return Path(opts.model_dir or spec.model_dir) / "eval"
    if is_gptx_checkpoint(checkpoint):  # a gptx checkpoint lives in its model_dir
        return checkpoint.resolve().parent / "eval"
    return None  # a bare Hugging Face directory: print only, write nothing into it


def run_eval(opts: EvalOptions, log: Any = None) -> list[CheckpointReport]:
    """Evaluate the chosen checkpoint(s); writes model_dir/eval/<checkpoint>.json for each one."""
    log = log or (lambda msg: print(msg, file=sys.stderr))
    if opts.config is None and not opts.tasks:
        raise UsageError("nothing to evaluate: give a CONFIG (validation data) and/or --tasks")
    if opts.eval_steps is not None and opts.eval_steps < 1:
        raise UsageError(f"--eval-steps must be at least 1, got {opts.eval_steps}")
    spec = None
    if opts.config is not None:
        spec = load_run_spec(opts.config, overrides=opts.overrides)
        if spec.val_data is None:
            if not opts.tasks:
                raise UsageError(
                    f"{opts.config}: no validation data (validate.val_dataloader or eval_input)",
                    hint="add one, or pass --tasks",
                )
    tasks = [load_task(t, opts.tasks_dir) for t in opts.tasks]  # fail on a bad file before loading a model
    device = resolve_device(opts.device)
    dtype = resolve_dtype(opts.dtype)
    reports = []
    for checkpoint in _checkpoints_to_run(opts, spec):
        source = resolve(checkpoint)
        ckpt_cfg, step = source.config, source.step
        report = CheckpointReport(checkpoint=str(checkpoint), step=step)
        if spec is not None:
            report.warnings = compare_model_configs(
                spec.model, ckpt_cfg, config_name=str(opts.config), checkpoint=str(checkpoint)
            )
            for w in report.warnings:
                log(f"warning: {w}")
        data_dirs = spec.val_data.data_dir if spec is not None and spec.val_data is not None else []
        tokenizer = resolve_tokenizer(source, opts.tokenizer, data_dirs) if tasks else None
        model = source.load_model(device, dtype)
        if spec is not None and spec.val_data is not None:
            loader = build_dataloader(spec.val_data, seed=spec.seed, infinite=False)
            eval_steps = opts.eval_steps or spec.loop.eval_steps
            metrics = loss_metrics(
                model,
                loader,
                device=device,
                eval_steps=eval_steps,
                loss_scaling=model.cfg.loss_scaling,
                loss_weight=model.cfg.loss_weight,
                source=", ".join(spec.val_data.data_dir) or str(opts.config),
            )
            report.metrics = metrics.to_dict()
        if tokenizer is not None:
            scorer = LoglikelihoodScorer(
                model, max_length=model.cfg.max_position_embeddings, batch_size=opts.batch_size, device=device
            )
            for task in tasks:
                result = evaluate_task(
                    task, scorer, tokenizer, limit=opts.limit, num_fewshot=opts.num_fewshot, seed=opts.seed
                )
                report.tasks.append(result.to_dict())
        out_dir = _output_dir(opts, spec, checkpoint) if opts.write else None
        if out_dir is not None:
            name = checkpoint.name if step is None else f"checkpoint_{step}"
            path = out_dir / f"{name}.json"
            write_json(path, report.to_dict())
            report.output = str(path)
        reports.append(report)
        del model
    return reports


def format_table(reports: Sequence[CheckpointReport]) -> str:
    """One row per checkpoint (loss metrics), then one row per task metric."""
    lines = []
    if any(r.metrics for r in reports):
        header = f"{'checkpoint':<32} {'step':>7} {'loss':>10} {'lm_perplexity':>14} {'accuracy':>9} {'tokens':>10}"
        lines += [header, "-" * len(header)]
        for r in reports:
            if not r.metrics:
                continue
            m = r.metrics
            step = "-" if r.step is None else str(r.step)
            lines.append(
                f"{Path(r.checkpoint).name:<32} {step:>7} {m['loss']:>10.4f} {m['lm_perplexity']:>14.4f} "
                f"{m['accuracy']:>9.4f} {m['num_tokens']:>10}"
            )
    if any(r.tasks for r in reports):
        if lines:
            lines.append("")
        header = f"{'checkpoint':<32} {'task':<20} {'metric':<16} {'value':>12} {'docs':>6} {'shots':>5}"
        lines += [header, "-" * len(header)]
        for r in reports:
            for t in r.tasks:
                for metric, value in t["metrics"].items():
                    lines.append(
                        f"{Path(r.checkpoint).name:<32} {t['task']:<20} {metric:<16} {value:>12.4f} "
                        f"{t['num_docs']:>6} {t['num_fewshot']:>5}"
                    )
    for r in reports:
        if r.output:
            lines.append(f"wrote {r.output}")
    return "\n".join(lines)
