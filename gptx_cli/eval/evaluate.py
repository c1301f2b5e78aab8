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
import json
import math
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gptx_cli.checkpoint import (
    latest_checkpoint,
    list_checkpoints,
    resolve,
)
from gptx_cli.data.loader import build_dataloader, model_inputs
from gptx_cli.distributed import Dist, all_gather_object, all_reduce_sum, init_distributed, under_torchrun
from gptx_cli.errors import CheckpointError, DataError, UsageError
from gptx_cli.eval.generate import BatchGenerator
from gptx_cli.eval.harness import HarnessTokenizer
from gptx_cli.eval.options import EvalOptions, Prepared, prepare
from gptx_cli.eval.scorer import LoglikelihoodScorer
from gptx_cli.eval.source import resolve_device, resolve_dtype, resolve_tokenizer
from gptx_cli.eval.tasks import aggregate, evaluate_task, limit_docs
from gptx_cli.fsutil import check_output, write_json, write_text
from gptx_cli.model.loss import lm_loss
from gptx_cli.model.transformer import parameter_shapes
from gptx_cli.model.vocab import check_token_ids


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


def compare_model_configs(yaml_cfg: Any, ckpt_cfg: Any, *, config_name: str, checkpoint: str) -> list[str]:
    """Check a checkpoint against the config's `model` section.

    A differing field that changes any parameter's shape (found by building both models on the meta
    device) is an error naming the field; other differences follow the checkpoint and come back as
    warnings. Training-only fields (dropout, initializers) are ignored.
    """
    differing = yaml_cfg.differences(ckpt_cfg)
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
    dist: Any = None,
    forward: Callable[..., tuple[Any, ...]] | None = None,
    all_reduce: Callable[[Any], None] | None = None,
) -> LossMetrics:
    """ModelZoo eval metrics over `batches` (dicts with input_ids, attention_mask = loss mask, labels;
    further keys, e.g. VSL's position_ids, go to the model as keyword arguments).

    `loss` is the mean of the step losses (each batch's, in the model's loss_scaling), `lm_perplexity`
    exp(token cross-entropy sum / loss tokens), `accuracy` over loss tokens.

    With `dist` (several processes) every process reads the same batches and runs batch i when
    i % world_size == rank; the sums (float64) are added over processes once at the end, so the
    metrics are those of one process up to the order of float64 additions.

    Hooks for the trainer, whose processes each hold a share of every batch: `forward(input_ids,
    labels, mask, **extra) -> (loss, loss_sum, num_tokens, num_correct)` replaces `lm_loss(model, ...)`
    (the wrapped loss module, so FSDP2 gathers its shards), and `all_reduce(t)` sums a device tensor
    over the processes in place, so each step's loss is the global batch's."""
    import torch

    vocab = model.cfg.vocab_size
    rank, world = (dist.rank, dist.world_size) if dist is not None and dist.enabled else (0, 1)
    # Per-batch sums stay on the device and are read once at the end: no host sync per batch.
    per_step: list[Any] = []  # [CE sum, loss tokens, rows, correct] per batch
    samples = steps = seen_tokens = 0
    start = time.perf_counter()
    # FSDP2 re-gathers parameters into buffers that training reuses: no inference tensors there.
    with torch.no_grad() if forward is not None else torch.inference_mode():
        for index, batch in enumerate(batches):
            if eval_steps is not None and index >= eval_steps:
                break
            if world > 1 and index % world != rank:
                continue
            # The range check reads the loader's host copy, before the batch moves to the device.
            ids = (batch["input_ids"], batch["labels"])
            check_token_ids(min(int(t.min()) for t in ids), max(int(t.max()) for t in ids), vocab, source)
            input_ids = batch["input_ids"].to(device, non_blocking=True)
            labels = batch["labels"].to(device, non_blocking=True)
            mask = batch["attention_mask"].to(device, non_blocking=True)
            extra = model_inputs(batch, device)  # e.g. VSL's position_ids and attention_span
            if forward is not None:
                _, loss_sum, ntok, ncorrect = forward(input_ids, labels, mask, **extra)
            else:
                out = lm_loss(
                    model,
                    input_ids,
                    labels,
                    mask,
                    loss_scaling=loss_scaling,
                    loss_weight=loss_weight,
                    **extra,
                )
                loss_sum, ntok, ncorrect = out.loss_sum, out.num_tokens, out.num_correct
            rows = torch.full((), float(input_ids.shape[0]), dtype=torch.float64, device=loss_sum.device)
            per_step.append(torch.stack([loss_sum.double(), ntok.double(), rows, ncorrect.double()]))
            samples += int(input_ids.shape[0])
            seen_tokens += int(input_ids.numel())
            steps += 1
    table = torch.stack(per_step) if per_step else torch.zeros(0, 4, dtype=torch.float64, device=device)
    if all_reduce is not None:
        all_reduce(table)
    counts = (samples, steps, seen_tokens)
    return _loss_summary(
        table.tolist(), counts, loss_scaling, loss_weight, dist if world > 1 else None, source, start
    )


def _loss_summary(
    rows: list[list[float]],
    counts: tuple[int, int, int],
    loss_scaling: str,
    loss_weight: float,
    dist: Any,
    source: str,
    start: float,
) -> LossMetrics:
    """LossMetrics from the per-step [CE sum, loss tokens, rows, correct] sums (and the samples, steps
    and input tokens seen), summed over the processes of `dist` when there are several."""
    samples, steps, seen_tokens = counts
    if loss_scaling == "num_tokens":
        step_losses = [ce / max(t, 1.0) for ce, t, _, _ in rows]
    else:
        step_losses = [ce / n * loss_weight for ce, _, n, _ in rows]
    loss_total = sum(step_losses)
    ce_sum, tokens_f, correct_f = (sum(r[i] for r in rows) for i in (0, 1, 3))
    if dist is not None:
        loss_total, ce_sum, tokens_f, correct_f, samples_f, steps_f, seen_f = all_reduce_sum(
            [loss_total, ce_sum, tokens_f, correct_f, float(samples), float(steps), float(seen_tokens)], dist
        )
        samples, steps, seen_tokens = int(samples_f), int(steps_f), int(seen_f)
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


# not model_dir/eval/: that is TensorBoard's eval event directory (train/metrics.py)
RESULTS_DIR = "eval_results"


def _refuse_overwrite(out_dir: Path | None, name: str, opts: EvalOptions) -> None:
    """An earlier result of this checkpoint (e.g. validation metrics, before an `--tasks` run) is not
    replaced without --overwrite."""
    if out_dir is not None and not opts.overwrite and (out_dir / f"{name}.json").exists():
        raise UsageError(
            f"{out_dir / f'{name}.json'} already exists (an earlier eval of this checkpoint)",
            hint="pass --overwrite to replace it, or --output-dir to write elsewhere",
        )


def _output_dir(opts: EvalOptions, source: Any) -> Path:
    """--output-dir, else `eval_results/` beside the evaluated checkpoint (in its model_dir), whichever
    config or flag named it: another run's checkpoint of the same step never lands on this one's file."""
    if opts.output_dir:
        return Path(opts.output_dir)
    return source.directory.resolve().parent / RESULTS_DIR


@dataclass
class _Planned:
    """One checkpoint to evaluate, with where its results go; all are known before any is evaluated."""

    checkpoint: Path
    source: Any
    name: str
    out_dir: Path | None


def _plan(opts: EvalOptions, spec: Any, has_tasks: bool) -> list[_Planned]:
    """Every checkpoint to evaluate with its result file, checked up front: an existing result (without
    --overwrite), an unwritable place or a --max-length past a model's positions stops the run before
    the first checkpoint is evaluated."""
    plan = []
    for checkpoint in _checkpoints_to_run(opts, spec):
        source = resolve(checkpoint)
        if has_tasks:
            context_length(opts.max_length, source.config.max_position_embeddings, opts.extrapolate)
        name = source.directory.resolve().name  # results are named as the checkpoint dir they evaluate
        out_dir = _output_dir(opts, source) if opts.write else None
        if out_dir is not None:
            check_output(
                out_dir, what="--output-dir" if opts.output_dir else "the results directory", kind="dir"
            )
            _refuse_overwrite(out_dir, name, opts)
        elif opts.log_samples:
            raise UsageError("--log-samples needs somewhere to write: pass --output-dir")
        plan.append(_Planned(checkpoint, source, name, out_dir))
    return plan


def context_length(max_length: int | None, positions: int, extrapolate: bool = False) -> int:
    """--max-length (default: the model's max_position_embeddings); past the trained positions only with
    --extrapolate, as `gptx generate` refuses a prompt longer than the context."""
    n = int(max_length or positions)
    if n < 2:
        raise UsageError(f"--max-length {n}: must be >= 2, got {n}")
    if n > positions and not extrapolate:
        raise UsageError(
            f"--max-length {n}: the model was trained on {positions} positions",
            hint="pass --extrapolate to score past them anyway",
        )
    return n


def _shard(n: int, rank: int, world: int) -> tuple[int, int]:
    """Contiguous document range of one rank (joined in rank order, the shards give back the documents in order)."""
    per, extra = divmod(n, world)
    start = rank * per + min(rank, extra)
    return start, start + per + (1 if rank < extra else 0)


def _run_tasks(
    opts: EvalOptions, tasks: Sequence[Any], model: Any, tokenizer: Any, device: Any, dist: Any
) -> list[Any]:
    """Score every task on this process's share of its documents; rank 0 gets the joined results."""

    max_length = context_length(opts.max_length, model.cfg.max_position_embeddings, opts.extrapolate)
    scorer = LoglikelihoodScorer(model, max_length=max_length, batch_size=opts.batch_size, device=device)
    scorer.ids_from = f"tokenizer {getattr(tokenizer, 'name', '')}".strip()
    tok = HarnessTokenizer(tokenizer)
    generator = BatchGenerator(model, tok, max_length=max_length, batch_size=opts.batch_size)
    results = []
    for task in tasks:
        doc_range = None
        if dist.enabled:
            doc_range = _shard(limit_docs(len(task.docs), opts.limit), dist.rank, dist.world_size)
        result = evaluate_task(
            task,
            scorer,
            tok,
            limit=opts.limit,
            num_fewshot=opts.num_fewshot,
            seed=opts.seed,
            bootstrap_iters=opts.bootstrap_iters,
            generate_fn=generator.generate_until,
            log_samples=opts.log_samples,
            doc_range=doc_range,
        )
        if dist.enabled:
            shards = all_gather_object((result.per_doc, result.samples, result.requests), dist)
            result.per_doc = {m: [x for per_doc, _, _ in shards for x in per_doc[m]] for m in result.per_doc}
            result.samples = [x for _, samples, _ in shards for x in samples]
            result.requests = sum(n for _, _, n in shards)
            aggregate(result, opts.bootstrap_iters)
        results.append(result)
    return results


def _write_samples(path: Path, samples: list[dict[str, Any]]) -> None:

    write_text(path, "".join(json.dumps(sample, ensure_ascii=False) + "\n" for sample in samples))


def run_eval(opts: EvalOptions, log: Any = None, prepared: Prepared | None = None) -> list[CheckpointReport]:
    """Evaluate the chosen checkpoint(s); writes eval_results/<checkpoint>.json beside each one (or in
    --output-dir), all result paths checked before the first checkpoint is evaluated.

    Under torchrun (`gptx eval --nproc N`) each process scores its share of the validation batches and
    of each task's documents; the sums and per-document items are joined on every rank, rank 0 writes.
    """
    log = log or (lambda msg: print(msg, file=sys.stderr))
    spec, tasks = prepared or prepare(opts)
    dist = Dist()
    if under_torchrun():
        target = {"auto": "auto", "cpu": "CPU"}.get(opts.device, "GPU")
        dist = init_distributed(target)
    device = resolve_device(dist.device if dist.enabled else opts.device)
    if not dist.is_main:
        log = lambda _msg: None  # noqa: E731 (rank 0 speaks for all)
    dtype = resolve_dtype(opts.dtype)
    reports = []
    for planned in _plan(opts, spec, bool(tasks)):
        source, name, out_dir = planned.source, planned.name, planned.out_dir
        ckpt_cfg, step = source.config, source.step
        report = CheckpointReport(checkpoint=str(source.directory), step=step)
        if spec is not None:
            report.warnings = compare_model_configs(
                spec.model, ckpt_cfg, config_name=str(opts.config), checkpoint=str(planned.checkpoint)
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
                dist=dist,
            )
            report.metrics = metrics.to_dict()
        if tokenizer is not None:
            for result in _run_tasks(opts, tasks, model, tokenizer, device, dist):
                report.tasks.append(result.to_dict())
                if opts.log_samples and out_dir is not None and dist.is_main:
                    path = out_dir / f"{name}.samples_{result.name}.jsonl"
                    _write_samples(path, result.samples)
                    log(f"wrote {path}")
        if out_dir is not None and dist.is_main:
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
        header = f"{'checkpoint':<32} {'task':<20} {'metric':<16} {'value':>12} {'stderr':>10} {'docs':>6} {'shots':>5}"
        lines += [header, "-" * len(header)]
        for r in reports:
            for t in r.tasks:
                for metric, value in t["metrics"].items():
                    if metric.endswith("_stderr"):
                        continue
                    err = t["metrics"].get(f"{metric}_stderr", "N/A")
                    err_s = f"{err:.4f}" if isinstance(err, float) else str(err)
                    lines.append(
                        f"{Path(r.checkpoint).name:<32} {t['task']:<20} {metric:<16} {value:>12.4f} "
                        f"{'± ' + err_s:>10} {t['num_docs']:>6} {t['num_fewshot']:>5}"
                    )
    for r in reports:
        if r.output:
            lines.append(f"wrote {r.output}")
    return "\n".join(lines)
