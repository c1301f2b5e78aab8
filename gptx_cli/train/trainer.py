"""The training loop: `train(spec, options) -> TrainResult`.

Read top to bottom it is: check memory, build the model, load weights (resume or continue-pretrain),
wrap it (activation checkpointing, FP8, DDP / FSDP2, compile), build optimizer, schedule and loss
scaler, restore their state, then a plain loop over components: the step (`train.step.Stepper`), the
metrics (`MetricsLogger` with its throughput window), evaluation (`eval.evaluate.loss_metrics`) and
checkpoints (`train.checkpointer.Checkpointer`); it stops cleanly on SIGINT/SIGTERM and with
ModelZoo's CheckLoss error on a non-finite loss.

Host syncs. A step returns device scalars; the loop reads them (one sync) only at log, eval and
checkpoint steps, where it also checks that every step since the last read was finite.

Global-batch semantics. `batch_size` is the global batch. Each micro-batch's loss is weighted by its
share of the global denominator (tokens for `loss_scaling: num_tokens`, rows for `batch_size`), and DDP
/ FSDP average gradients over ranks, so 1 process and N processes compute the same gradient and the
same reported loss for the same global batch (up to float summation order).

Exact resume. A checkpoint holds weights, optimizer, schedule step, loss scaler, every rank's RNG and
the data loader's global sample position; the schedule is a closed form of the step and the data
order a function of the position, so N steps + resume + N steps is bit-identical to 2N steps on CPU.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import math
import resource
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from gptx_cli import distributed
from gptx_cli.config.lora import lora_from_raw
from gptx_cli.config.spec import RunSpec
from gptx_cli.data.loader import build_dataloader, recorded_loss_tokens, with_model_preprocess_args
from gptx_cli.errors import ConfigError, DataError, UsageError
from gptx_cli.eval.evaluate import loss_metrics
from gptx_cli.model.counts import flops_per_token
from gptx_cli.model.init import (
    init_model,
    initialize_tensor,
    mup_init_note,
    optimizer_param_groups,
    resolved_initializers,
)
from gptx_cli.model.lora import init_adapters, is_adapter
from gptx_cli.model.transformer import Block
from gptx_cli.model.vocab import check_token_ids
from gptx_cli.train import parallel, state
from gptx_cli.train.agree import check_ranks_agree
from gptx_cli.train.callbacks import Callbacks, build_callbacks
from gptx_cli.train.checkpointer import Checkpointer, checkpoint_dir_name, resume_source
from gptx_cli.train.fp8 import RECIPE, apply_fp8, check_fp8
from gptx_cli.train.lock import model_dir_lock
from gptx_cli.train.lora import LoraRun
from gptx_cli.train.memory_guard import check_memory
from gptx_cli.train.metrics import MetricsLogger, ThroughputWindow, peak_tflops, truncate_metrics
from gptx_cli.train.optim import build_optimizer, optimizer_learning_rate
from gptx_cli.train.precision import LossScaler, autocast, for_device
from gptx_cli.train.schedulers import LRSchedule, build_schedule
from gptx_cli.train.step import LossModule, StepOutput, Stepper

__all__ = ["LossModule", "TrainOptions", "TrainResult", "checkpoint_dir_name", "preflight", "train"]


@dataclass
class TrainOptions:
    """Command-line choices that override or complement the config (ModelZoo's run flags)."""

    model_dir: str | None = None
    checkpoint_path: str | None = None
    load_checkpoint_states: str | None = None  # "all" or a comma list of state.STATE_NAMES
    max_steps: int | None = None
    target_device: str | None = None  # CPU | GPU; None: from backend_type (CSX: GPU if present)
    compile: bool | None = None
    activation_checkpointing: bool | None = None
    strategy: str | None = None  # ddp | fsdp
    micro_batch_size: int | None = None
    continue_pretrain: bool = False  # weights only from checkpoint_path, step 0, fresh optimizer
    console: str = "auto"  # auto | rich | plain
    fp8: bool = False  # torchao float8 rowwise matmuls in the blocks (H100/H200 only)
    lora_save_base: bool = False  # LoRA checkpoints hold the base weights too (gptx extension)
    sync_checkpoints: bool = (
        False  # write each checkpoint in the loop, not in the background (gptx extension)
    )


@dataclass
class TrainResult:
    start_step: int
    end_step: int
    final_loss: float | None
    best_eval_loss: float | None
    tokens: int
    seconds: float
    stopped_by: str = "completed"  # completed | signal
    stop_signal: str | None = None  # SIGINT | SIGTERM | SIGUSR1 (preemption: exit REQUEUE_EXIT_CODE)
    last_checkpoint: str | None = None
    train_losses: list[float] = field(default_factory=list)


def resolve_device(spec: RunSpec, options: TrainOptions) -> str:
    target = (options.target_device or spec.backend.backend_type or "CPU").upper()
    if target not in ("CPU", "GPU", "CSX"):
        raise UsageError(f"--target-device must be CPU or GPU (got {target})")
    return target


def preflight(spec: RunSpec, options: TrainOptions, nproc: int) -> None:
    """What `--nproc` checks once, before launching: the memory guard, then the data dirs (the same
    checks every process makes before it builds anything)."""
    target = resolve_device(spec, options)
    gpu = target == "GPU" or (target == "CSX" and torch.cuda.is_available())
    _Run(spec, options, distributed.Dist(world_size=nproc, device="cuda:0" if gpu else "cpu")).check_fits()


def train(spec: RunSpec, options: TrainOptions) -> TrainResult:
    target = resolve_device(spec, options)
    if spec.train_data is None:
        raise ConfigError(f"{spec.source or 'config'}: no train_dataloader (trainer.fit.train_dataloader)")
    dist = distributed.init_distributed(target)
    try:
        check_ranks_agree(spec, options, dist)
        with (
            model_dir_lock(options.model_dir or spec.model_dir) if dist.is_main else contextlib.nullcontext()
        ):
            run = _Run(spec, options, dist)
            if target == "CSX":
                run.notes.append(
                    f"backend_type CSX: running on {dist.device} (gptx runs on plain PyTorch devices)"
                )
            return run.run()
    finally:
        distributed.shutdown(dist)


class _Run:
    def __init__(self, spec: RunSpec, options: TrainOptions, dist: distributed.Dist) -> None:
        self.options, self.dist = options, dist
        self.device = torch.device(dist.device)
        precision, precision_lines = for_device(spec.precision, self.device.type, spec.backend.cpu_float16)
        self.spec = spec = dataclasses.replace(spec, precision=precision)
        self.model_dir = Path(options.model_dir or spec.model_dir)
        self.seed = spec.seed if spec.seed is not None else 0
        self.strategy = (options.strategy or spec.backend.strategy or "ddp").lower()
        self.stop_signal: str | None = None
        self.log: MetricsLogger | None = None
        self.notes: list[str] = list(spec.notes) + precision_lines
        self.losses: list[float] = []  # every step's loss, read at the sync points
        self.callbacks = Callbacks([], self.model_dir, enabled=False)
        # Where the run starts from, and its LoRA side (which may take the resumed checkpoint's settings).
        self.source, self.load_states = resume_source(
            spec,
            self.model_dir,
            options.checkpoint_path,
            options.load_checkpoint_states,
            options.continue_pretrain,
            self.notes,
        )
        self.lora, self.load_states = LoraRun.create(
            spec, self.source, self.load_states, self.seed, save_base=options.lora_save_base, notes=self.notes
        )
        mup_note = mup_init_note(spec.model)
        if mup_note and self.source is None:  # a run that initialises its weights
            self.notes.append(mup_note)
        if self.lora and self.lora.base_in is not None and not options.lora_save_base:
            self.notes.append(
                f"LoRA: {self.lora.base_in} holds its base weights; its checkpoints keep holding them"
            )

    # ------------------------------------------------------------------------------------ setup
    def _say(self, message: str) -> None:
        if self.dist.is_main:
            if self.log is not None:
                self.log.note(message)
            else:
                print(message, flush=True)

    def _batch_layout(self) -> tuple[int, int, int]:
        """(global batch, micro-batch rows, micro-batches per rank per step)."""
        assert self.spec.train_data is not None
        global_batch, world = int(self.spec.train_data.batch_size), self.dist.world_size
        if global_batch % world:
            raise UsageError(
                f"train_dataloader.batch_size {global_batch} (the global batch) does not divide over {world} "
                "processes; choose a process count that divides it"
            )
        per_rank = global_batch // world
        micro = self.options.micro_batch_size or self.spec.backend.micro_batch_size
        if micro:
            if per_rank % micro:
                raise UsageError(
                    f"--micro-batch-size {micro} does not divide the per-process batch {per_rank} "
                    f"(global batch {global_batch} over {world} processes)"
                )
            return global_batch, micro, per_rank // micro
        accum = max(1, int(self.spec.loop.grad_accum_steps or 1))
        if per_rank % accum:
            raise ConfigError(
                f"loop.grad_accum_steps {accum} does not divide the per-process batch {per_rank}"
            )
        return global_batch, per_rank // accum, accum

    def _initialize_shards(self, model: torch.nn.Module) -> None:
        """FSDP2: each parameter's full initial value is drawn on the device exactly as a single process
        draws it (`initialize_tensor`), and only this process's shard of it is kept."""
        inits = resolved_initializers(self.spec.model)
        for name, param in model.named_parameters():
            if is_adapter(name):
                continue  # LoRA adapters: LoraRun
            full = torch.empty(param.shape, dtype=param.dtype, device=self.device)
            initialize_tensor(full, name, inits, self.seed)
            parallel.copy_full_into(param, full)
            del full

    def _build(self) -> None:
        spec, options = self.spec, self.options
        state.seed_everything(self.seed)
        self.ckpt = Checkpointer(
            spec,
            dist=self.dist,
            model_dir=self.model_dir,
            strategy=self.strategy,
            seed=self.seed,
            source=self.source,
            load_states=self.load_states,
            lora=self.lora,
            notes=self.notes,
            say=self._say,
            background=not options.sync_checkpoints,
        )
        # FSDP2 builds on the meta device and materialises only each process's shards after wrapping
        # (peak: the shards plus one full parameter); one process and DDP build the whole model in place.
        sharded = parallel.is_sharded(self.dist, self.strategy)
        model = init_model(spec.model, device="meta" if sharded else str(self.device), seed=self.seed)
        if self.ckpt.loads_weights and not sharded:
            self.ckpt.load_weights(model)
        if self.lora:
            self._say(f"LoRA: adapters on {len(self.lora.attach(model, self.seed))} modules")
        model.train()
        if options.activation_checkpointing or spec.backend.activation_checkpointing:
            parallel.apply_activation_checkpointing(model)
        if options.fp8:
            self.notes.append(
                f"fp8: {apply_fp8(model)} linear layers run in float8 (torchao, {RECIPE} scaling)"
            )
        if options.compile or spec.backend.compile:
            parallel.compile_model(model)  # compiles the blocks in place
        self.model: torch.nn.Module = model
        loss_module = LossModule(model, spec.model.loss_scaling, spec.model.loss_weight)
        self.wrapped = parallel.wrap_model(loss_module, self.dist, self.strategy, block_types=(Block,))
        if sharded:
            # Rotary tables are no buffers: the Transformer computes and caches them on the first forward.
            loss_module.to_empty(device=self.device)
            if self.ckpt.loads_weights:
                self.ckpt.load_weights(model)
            else:
                self._initialize_shards(model)
            if self.lora:
                init_adapters(model, self.seed, copy=parallel.copy_full_into)
        if self.lora:
            self.lora.load_adapters(model, self.device, copy=parallel.copy_full_into)
        groups = optimizer_param_groups(parallel.unwrap(self.model), spec.model)
        self.optimizer = build_optimizer(spec.optimizer, groups)
        self.schedule = LRSchedule(
            self.optimizer, build_schedule(spec.schedulers, optimizer_learning_rate(spec.optimizer))
        )
        self.scaler = LossScaler(spec.precision)
        self.ckpt.attach(self.model, self.wrapped, self.optimizer, self.schedule, self.scaler)

    def _prepare(self) -> tuple[Any, int, int]:
        """Memory guard, data, model, restored state, logger and step; returns (loader, start, end)."""
        spec, d = self.spec, self.dist
        assert spec.train_data is not None
        global_batch, micro, n_micro = self.check_fits()
        loader = build_dataloader(
            spec.train_data,
            rank=d.rank,
            world_size=d.world_size,
            seed=self.seed,
            pin_memory=self.device.type == "cuda",  # batches copy to the GPU asynchronously
        )
        self._build()
        start, samples_seen = self.ckpt.load()
        loader.load_state_dict({"position": samples_seen})
        end = self._end_step(start)
        if start >= end:
            return loader, start, end  # nothing to train: run() says so
        msl = loader.max_sequence_length
        if msl > spec.model.max_position_embeddings:
            raise DataError(
                f"data max_sequence_length {msl} exceeds model.max_position_embeddings "
                f"{spec.model.max_position_embeddings}"
            )
        self.callbacks = build_callbacks(spec, self.model_dir, enabled=d.is_main)  # ComputeNorm, loggers
        self.stepper = Stepper(
            self.wrapped,
            self.optimizer,
            device=self.device,
            precision=spec.precision,
            schedule=self.schedule,
            scaler=self.scaler,
            micro_batch_size=micro,
            loss_scaling=spec.model.loss_scaling,
            dist=d,
            start_step=start,
            before_backward=lambda: self.callbacks.on_before_backward(self.model),
            before_optimizer_step=lambda: self.callbacks.on_before_optimizer_step(self.model),
        )
        self.tokens_per_step = global_batch * msl
        if d.is_main:
            truncate_metrics(self.model_dir, start)
            window = ThroughputWindow(
                tokens_per_step=self.tokens_per_step,
                flops_per_token=_flops_per_token(spec, msl),
                peak_tflops=peak_tflops(d.device),
                world_size=d.world_size,
                start_step=start,
            )
            self.log = MetricsLogger(
                self.model_dir, total_steps=end, start_step=start, console=self.options.console,
                tensorboard_dir=self.callbacks.tensorboard_dir, sinks=self.callbacks.sinks, window=window,
            )  # fmt: skip
        if any(data is not None and data.use_vsl for data in (spec.train_data, spec.val_data)):
            self.notes.append(
                "use_vsl: document-masked attention "
                f"({parallel.unwrap(self.model).vsl_backend(self.device, msl)})"
            )
        for note in self.notes:
            self._say(f"note: {note}")
        self._say(
            f"training steps {start}..{end} on {d.world_size} x {d.device}"
            f"{' (' + self.strategy + ')' if d.enabled else ''}: global batch {global_batch} x {msl} tokens, "
            f"{n_micro} micro-batch(es) of {micro} per process; model_dir {self.model_dir}"
        )
        return loader, start, end

    # ------------------------------------------------------------------------------------ components
    def _sync(self, pending: list[tuple[int, StepOutput]], log: bool) -> None:
        """Read the steps since the last sync (one host read), stop on a non-finite one (CheckLoss),
        and log the last of them when `log`."""
        if not pending:
            return
        values = torch.stack(
            [torch.stack([o.loss, o.grad_norm.double(), o.tokens]) for _, o in pending]
        ).tolist()
        last = self.ckpt.last
        self.stepper.check_finite(hint=f"resume from {last}" if last else None)
        self.losses += [v[0] for v in values]
        step, out = pending[-1]
        lr = float(out.lr) if out.lr is not None else None  # a device scalar with dynamic loss scaling
        pending.clear()
        if log and self.log is not None:
            loss, grad_norm, _ = values[-1]
            self.log.log_train(
                step,
                {
                    "loss": loss,
                    "lr": lr,
                    "grad_norm": grad_norm,
                    "loss_scale": self.scaler.scale if self.scaler.dynamic else None,
                    "memory_gib": _memory_gib(self.device),
                    **self.callbacks.metrics(),
                },
            )

    def _evaluate(self, step: int) -> None:
        """Validation with `gptx eval`'s metric code (eval.evaluate.loss_metrics) through the wrapped
        model (FSDP2 gathers its shards), summed over ranks by the all-reduce hook."""
        spec, d = self.spec, self.dist
        assert spec.val_data is not None
        loader = build_dataloader(
            spec.val_data, rank=d.rank, world_size=d.world_size, seed=self.seed, infinite=False
        )
        # every rank must run the same number of forwards (FSDP2 all-gathers in each): full batches only
        full_batches = loader.samples_per_epoch // loader.global_batch_size
        n = min(spec.loop.eval_steps or full_batches, full_batches)
        if n == 0:
            return
        self.wrapped.eval()
        try:
            with autocast(spec.precision, self.device.type):
                m = loss_metrics(
                    parallel.unwrap(self.model),
                    loader,
                    device=self.device,
                    eval_steps=n,
                    loss_scaling=spec.model.loss_scaling,
                    loss_weight=spec.model.loss_weight,
                    source=", ".join(spec.val_data.data_dir),
                    forward=self.wrapped,
                    all_reduce=distributed.all_reduce_tensor if d.enabled else None,
                )
        finally:
            self.wrapped.train()
            parallel.reshard(self.wrapped)
        best = self.ckpt.progress.get("best_eval_loss")
        if best is None or m.loss < best:
            self.ckpt.progress["best_eval_loss"] = m.loss
        if self.log is not None:
            keys = ("loss", "lm_perplexity", "accuracy", "num_tokens", "eval_steps")
            self.log.log({"step": step, "split": "eval", **{k: getattr(m, k) for k in keys}})

    # ------------------------------------------------------------------------------------ loop
    def _end_step(self, start: int) -> int:
        loop = self.spec.loop
        if self.options.max_steps is not None:
            return int(self.options.max_steps)
        if loop.num_steps:
            return (
                start + int(loop.num_steps)
                if loop.max_steps is None
                else min(start + int(loop.num_steps), int(loop.max_steps))
            )
        if loop.max_steps is None:
            raise ConfigError("loop: set max_steps or num_steps (or pass --max-steps)")
        return int(loop.max_steps)

    def _is_eval_step(self, step: int, start: int, end: int) -> bool:
        """ModelZoo's eval_frequency: an int is every N global steps, a float in (0, 1] a fraction of
        this run's steps; evaluation also runs at the end of training when either is set."""
        freq = self.spec.loop.eval_frequency
        if not freq or self.spec.val_data is None:
            return False
        if step == end:
            return True
        if isinstance(freq, float) and freq <= 1.0:
            return (step - start) % max(1, math.ceil(freq * max(1, end - start))) == 0
        return step % int(freq) == 0

    def _is_log_step(self, step: int, end: int) -> bool:
        return step % max(1, int(self.spec.logging.log_steps or 1)) == 0 or step == end

    def _is_checkpoint_step(self, step: int, end: int) -> bool:
        every = self.spec.checkpoint.steps
        return bool(every and step % every == 0) or step == end

    def check_fits(self) -> tuple[int, int, int]:
        """Before anything is allocated: --lora-save-base's and --fp8's needs, the batch layout, the memory
        guard, then the data (a missing data_dir names the `gptx preprocess` command). Returns the batch layout."""
        spec = self.spec
        assert spec.train_data is not None
        if self.options.lora_save_base and lora_from_raw(spec.raw, spec.source) is None:
            raise UsageError("--lora-save-base needs LoRA: --lora-r or a Lora callback in the config")
        if self.options.fp8:
            check_fp8(self.device)
        layout = self._batch_layout()
        check_memory(
            spec,
            self.dist,
            micro_batch_size=layout[1],
            strategy=self.strategy,
            activation_checkpointing=bool(
                self.options.activation_checkpointing or spec.backend.activation_checkpointing
            ),
        )
        try:
            build_dataloader(spec.train_data, world_size=self.dist.world_size)
            if spec.val_data is not None and spec.loop.eval_frequency:
                build_dataloader(spec.val_data, world_size=self.dist.world_size, infinite=False)
        except DataError as err:  # the hint's preprocess command gets the config's tokenizer and length
            msl = spec.train_data.max_sequence_length or spec.model.max_position_embeddings
            raise with_model_preprocess_args(err, spec.model.vocab_size, msl) from None
        recorded = [recorded_loss_tokens(d) for d in spec.train_data.data_dir]
        if recorded and all(n == 0 for n in recorded):
            raise DataError(
                f"{', '.join(spec.train_data.data_dir)}: no loss tokens (data_params.json: post-process."
                "loss_valid_tokens 0; every loss mask is 0), so training would learn nothing",
                hint="for fine-tuning data, check which fields are the prompt and the completion",
            )
        return layout

    def _install_signal_handlers(self) -> dict[int, Any]:
        """SIGINT, SIGTERM and SIGUSR1 (SLURM's warning before preemption) ask for a checkpoint at the next
        step boundary; returns the previous handlers."""

        def request_stop(signum: int, _frame: Any) -> None:
            self.stop_signal = signal.Signals(signum).name
            signal.signal(signum, signal.SIG_DFL)  # a second signal ends the process at once

        if threading.current_thread() is not threading.main_thread():
            return {}  # signals reach only the main thread (library use from a thread)
        previous: dict[int, Any] = {}
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1):
            previous[sig] = signal.signal(sig, request_stop)
        return previous

    @staticmethod
    def _restore_signal_handlers(previous: dict[int, Any]) -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    def _paused(self) -> contextlib.AbstractContextManager[None]:
        return self.log.paused() if self.log is not None else contextlib.nullcontext()

    def run(self) -> TrainResult:
        loader, start, end = self._prepare()
        assert self.spec.train_data is not None
        if start >= end:  # a finished run re-run: say so instead of an empty summary
            last = str(self.ckpt.source) if self.ckpt.source else None
            self._say(
                f"already at max_steps: {self.model_dir} is at step {start} (max_steps {end}); nothing to "
                f"train (raise --max-steps to go on); last checkpoint {last}"
            )
            return TrainResult(start, start, None, None, 0, 0.0, last_checkpoint=last)
        step, samples_seen, stopped_by = start, loader.position, "completed"
        pending: list[tuple[int, StepOutput]] = []  # device results since the last sync
        previous_handlers = self._install_signal_handlers()
        try:
            if self.spec.checkpoint.save_initial_checkpoint and start == 0:
                with self._paused():
                    self.ckpt.save(0, samples_seen)
            t_start, batches = time.perf_counter(), iter(loader)
            while step < end:
                batch = next(batches)
                _check_token_ids(
                    batch, self.spec.model.vocab_size, self.spec.train_data.data_dir
                )  # host copy
                pending.append((step + 1, self.stepper(batch)))
                if step == start:
                    _freeze_gc()
                step, samples_seen = step + 1, loader.position
                stop = distributed.any_rank(self.stop_signal is not None, self.dist)
                log_now, eval_now = self._is_log_step(step, end), self._is_eval_step(step, start, end)
                save_now = stop or self._is_checkpoint_step(step, end)
                if log_now or eval_now or save_now or len(pending) >= _MAX_PENDING:
                    self._sync(pending, log=log_now)
                self.ckpt.poll()  # a background save that finished: say so (or fail with its error)
                with self._paused():  # eval and checkpoint time stays out of tokens/s
                    if eval_now:
                        self._evaluate(step)
                    if save_now:
                        self.ckpt.save(step, samples_seen)
                if stop:
                    stopped_by = "signal"
                    with self._paused():
                        self.ckpt.wait()
                    self._say(
                        f"stopped by {self.stop_signal or 'a signal on another rank'} at step {step}; "
                        f"saved {self.ckpt.last}"
                    )
                    break
            with self._paused():
                self.ckpt.wait()  # the last checkpoint is complete before the summary names it
            return self._finish(start, step, stopped_by, time.perf_counter() - t_start)
        except BaseException:
            self.ckpt.abandon()  # a save in flight still completes; no collective on the way out
            raise
        finally:
            gc.unfreeze()
            self._restore_signal_handlers(previous_handlers)
            if self.log is not None:
                self.log.close()  # also on errors: the progress bar gives the terminal back

    def _finish(self, start: int, step: int, stopped_by: str, seconds: float) -> TrainResult:
        tokens = (step - start) * self.tokens_per_step
        final_loss = self.losses[-1] if self.losses else None
        best_eval = self.ckpt.progress.get("best_eval_loss")
        last = str(self.ckpt.last) if self.ckpt.last else None
        if self.log is not None:
            rows = [
                (
                    "steps",
                    f"{start} -> {step}"
                    + ("" if stopped_by == "completed" else f" (stopped by {self.stop_signal})"),
                ),
                ("tokens", f"{tokens:,}"),
                ("time", f"{seconds:.1f} s"),
                ("final loss", f"{final_loss:.4f}" if final_loss is not None else "-"),
                ("best eval loss", f"{best_eval:.4f}" if best_eval is not None else "-"),
                ("throughput", f"{tokens / max(seconds, 1e-9):,.0f} tokens/s"),
                ("last checkpoint", last or "-"),
            ]
            self.log.summary(rows, self.losses)
            self.log.close()
        return TrainResult(
            start_step=start,
            end_step=step,
            final_loss=final_loss,
            best_eval_loss=best_eval,
            tokens=tokens,
            seconds=seconds,
            stopped_by=stopped_by,
            stop_signal=self.stop_signal if stopped_by == "signal" else None,
            last_checkpoint=last,
            train_losses=self.losses,
        )


# At most this many steps' device results wait for a read (a run with a very long log interval).
_MAX_PENDING = 256


def _freeze_gc() -> None:
    """Move every object alive after the first step (model, optimizer, compiled code, loader) out of the
    garbage collector's reach until training ends. A full collection otherwise walks them all: half a
    million objects, ~0.3 s, every few dozen steps, a stall the GPU waits out. (torchtitan controls its
    collections for the same reason.)"""
    gc.collect()
    gc.freeze()


def _check_token_ids(batch: dict[str, torch.Tensor], vocab_size: int, data_dirs: list[str]) -> None:
    """model.vocab's one check on a host batch: input ids in [0, vocab_size), labels below vocab_size."""
    ids = batch["input_ids"].aminmax()
    high = int(torch.maximum(ids.max, batch["labels"].max()))
    check_token_ids(int(ids.min), high, vocab_size, ", ".join(data_dirs))


def _flops_per_token(spec: RunSpec, msl: int) -> float:
    return float(flops_per_token(spec.model, msl))


def _memory_gib(device: torch.device) -> float | None:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    try:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
    except (ImportError, OSError):
        return None
