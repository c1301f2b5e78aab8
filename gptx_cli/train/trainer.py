"""The training loop: `train(spec, options) -> TrainResult`.

Read top to bottom it is: check memory, build the model, load weights (resume or continue-pretrain),
wrap it (activation checkpointing, DDP / FSDP2, compile), build optimizer, schedule and loss scaler,
restore their state, then loop: one global batch per step, split over ranks and micro-batches; log,
evaluate and checkpoint at the configured steps; stop cleanly on SIGINT/SIGTERM or a non-finite loss.

Global-batch semantics. `batch_size` is the global batch. Each micro-batch's loss is weighted by its
share of the global denominator (tokens for `loss_scaling: num_tokens`, rows for `batch_size`), and DDP
/ FSDP average gradients over ranks, so 1 process and N processes compute the same gradient and the
same reported loss for the same global batch (up to float summation order).

Exact resume. A checkpoint holds weights, optimizer, schedule step, loss scaler, every rank's RNG and
the data loader's global sample position; the schedule is a closed form of the step and the data
order a function of the position, so N steps + resume + N steps is bit-identical to 2N steps on CPU.
"""

from __future__ import annotations

import gc
import math
import signal
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from gptx_cli.checkpoint import latest_checkpoint, list_checkpoints, locate, resolve, save_checkpoint_dir
from gptx_cli.config.spec import RunSpec
from gptx_cli.data.loader import build_dataloader
from gptx_cli.data.loader import model_inputs as loader_model_inputs
from gptx_cli.data.tokenizer import recorded_tokenizer
from gptx_cli.errors import CheckpointError, ConfigError, DataError, GptxError, UsageError
from gptx_cli.fsutil import temp_path
from gptx_cli.model.counts import flops_per_token
from gptx_cli.model.init import init_model, initialize_tensor, optimizer_param_groups, resolved_initializers
from gptx_cli.model.lora import init_adapters, is_adapter
from gptx_cli.model.loss import lm_loss
from gptx_cli.model.transformer import Block
from gptx_cli.train import parallel, state
from gptx_cli.train.callbacks import Callbacks, build_callbacks
from gptx_cli.train.lock import model_dir_lock
from gptx_cli.train.lora import LoraRun
from gptx_cli.train.memory_guard import check_memory
from gptx_cli.train.metrics import MetricsLogger, peak_tflops, truncate_metrics
from gptx_cli.train.optim import AdamW, build_optimizer, optimizer_learning_rate
from gptx_cli.train.parallel import apply_activation_checkpointing, compile_model
from gptx_cli.train.precision import LossScaler, autocast, clip_gradients, precision_notes
from gptx_cli.train.schedulers import LRSchedule, build_schedule


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


@dataclass
class TrainResult:
    start_step: int
    end_step: int
    final_loss: float | None
    best_eval_loss: float | None
    tokens: int
    seconds: float
    stopped_by: str = "completed"  # completed | signal
    last_checkpoint: str | None = None
    train_losses: list[float] = field(default_factory=list)


class LossModule(torch.nn.Module):
    """The model plus its loss as one module, so DDP and FSDP2 see the whole computation in forward()."""

    def __init__(self, model: torch.nn.Module, loss_scaling: str, loss_weight: float) -> None:
        super().__init__()
        self.model = model
        self.loss_scaling, self.loss_weight = loss_scaling, loss_weight

    def forward(
        self,
        input_ids: torch.Tensor,
        labels: torch.Tensor,
        loss_mask: torch.Tensor,
        **model_inputs: Any,
    ) -> tuple[Any, ...]:
        out = lm_loss(
            self.model,
            input_ids,
            labels,
            loss_mask,
            loss_scaling=self.loss_scaling,
            loss_weight=self.loss_weight,
            **model_inputs,
        )
        return out.loss, out.loss_sum, out.num_tokens, out.num_correct


def resolve_device(spec: RunSpec, options: TrainOptions) -> str:
    target = (options.target_device or spec.backend.backend_type or "CPU").upper()
    if target not in ("CPU", "GPU", "CSX"):
        raise UsageError(f"--target-device must be CPU or GPU (got {target})")
    return target


def checkpoint_dir_name(spec: RunSpec, step: int) -> str:
    name = spec.checkpoint.checkpoint_name or "checkpoint_{step}"
    name = name.format(step=step) if "{step}" in name else f"{name}_{step}"
    return name[: -len(".mdl")] if name.endswith(".mdl") else name


def preflight(spec: RunSpec, options: TrainOptions, nproc: int) -> None:
    """What `--nproc` checks once, before launching: the memory guard, then the data dirs (the same
    checks every process makes before it builds anything)."""
    target = resolve_device(spec, options)
    gpu = target == "GPU" or (target == "CSX" and torch.cuda.is_available())
    _Run(spec, options, parallel.Dist(world_size=nproc, device="cuda:0" if gpu else "cpu")).check_fits()


def train(spec: RunSpec, options: TrainOptions) -> TrainResult:
    target = resolve_device(spec, options)
    if spec.train_data is None:
        raise ConfigError(f"{spec.source or 'config'}: no train_dataloader (trainer.fit.train_dataloader)")
    dist = parallel.init_distributed(target)
    try:
        with model_dir_lock(options.model_dir or spec.model_dir) if dist.is_main else nullcontext():
            run = _Run(spec, options, dist)
            if target == "CSX":
                run.notes.append(
                    f"backend_type CSX: running on {dist.device} (gptx runs on plain PyTorch devices)"
                )
            return run.run()
    finally:
        parallel.shutdown(dist)


class _Run:
    def __init__(self, spec: RunSpec, options: TrainOptions, dist: parallel.Dist) -> None:
        self.spec, self.options, self.dist = spec, options, dist
        self.device = torch.device(dist.device)
        self.model_dir = Path(options.model_dir or spec.model_dir)
        self.seed = spec.seed if spec.seed is not None else 0
        self.strategy = (options.strategy or spec.backend.strategy or "ddp").lower()
        self.stop_signal: str | None = None
        self.log: MetricsLogger | None = None
        self.best_eval: float | None = None
        self.notes: list[str] = list(spec.notes) + precision_notes(spec.precision)
        self.callbacks = Callbacks([], self.model_dir, enabled=False)

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
                f"batch_size {global_batch} (the global batch) does not divide over {world} processes"
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

    def _resume_source(self) -> tuple[Path | None, set[str]]:
        """Which checkpoint to load and which of its states (see --load-checkpoint-states)."""
        explicit = self.options.checkpoint_path or self.spec.ckpt_path
        if explicit:
            explicit = str(locate(explicit)[0])  # a model_dir stands for its latest checkpoint
        latest = latest_checkpoint(self.model_dir) if self.spec.checkpoint.autoload_last_checkpoint else None
        if self.options.continue_pretrain:
            if latest is not None:  # an interrupted continue-pretrain run resumes from its own checkpoint
                self.notes.append(f"resuming the continued pretraining from {latest}")
                return latest, state.parse_load_states("all")
            if not explicit:
                raise UsageError(
                    "continue-pretrain needs --checkpoint-path (a gptx checkpoint or a Hugging Face dir)"
                )
            return Path(explicit), {"model"}
        if explicit:
            return Path(explicit), state.parse_load_states(self.options.load_checkpoint_states)
        if latest is not None:
            self.notes.append(f"autoload_last_checkpoint: resuming from {latest}")
            return latest, state.parse_load_states(self.options.load_checkpoint_states)
        return None, set()

    def _load_weights(self, model: torch.nn.Module, source: Path) -> None:
        """Copy a gptx checkpoint's or a Hugging Face dir's weights into `model`, one tensor at a time: a
        tensor is read, moved to the device and copied into its parameter (under FSDP2 only this
        process's shard of it is kept), so neither the host nor the device holds a second model."""
        found = resolve(source)
        params = {
            n: p for n, p in model.named_parameters() if not is_adapter(n)
        }  # no buffers; adapters: lora
        loaded: set[str] = set()
        extra: list[str] = []
        with found.open_weights() as tensors:
            self._note_config_differences(found.config, source)
            for name, tensor in tensors:
                param = params.get(name)
                if param is None:
                    extra.append(name)
                    continue
                if tuple(tensor.shape) != tuple(param.shape):
                    hint = ""
                    if name in ("embed.weight", "lm_head.weight", "lm_head.bias"):
                        hint = f" (vocab_size: checkpoint {tensor.shape[0]}, config {param.shape[0]})"
                    raise CheckpointError(
                        f"{source}: {name} has shape {tuple(tensor.shape)}, the config's model "
                        f"{tuple(param.shape)}{hint}"
                    )
                parallel.copy_full_into(param, tensor.to(self.device, param.dtype))
                loaded.add(name)
        missing = [name for name in params if name not in loaded]
        if missing:
            raise CheckpointError(f"{source}: weight {missing[0]} missing (the config's model has it)")
        if extra:
            raise CheckpointError(
                f"{source}: weights the config's model does not have: {', '.join(sorted(extra)[:5])}"
            )

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

    # Settings that change what the same weights compute; shapes are checked tensor by tensor.
    def _note_config_differences(self, ckpt_cfg: Any, source: Path) -> None:
        for name in self.spec.model.differences(ckpt_cfg):
            theirs, ours = getattr(ckpt_cfg, name), getattr(self.spec.model, name)
            self._say(
                f"note: {source} was made with model.{name}={theirs!r}; training uses the config's {ours!r}"
            )

    def _build(self) -> None:
        spec = self.spec
        state.seed_everything(self.seed)
        # FSDP2 builds on the meta device and materialises only each process's shards after wrapping
        # (peak: the shards plus one full parameter); one process and DDP build the whole model in place.
        sharded = parallel.is_sharded(self.dist, self.strategy)
        model = init_model(spec.model, device="meta" if sharded else str(self.device), seed=self.seed)
        self.ckpt_source, self.load_states = self._resume_source()
        self.lora = LoraRun.create(spec, self.ckpt_source, self.load_states, self.seed)
        if self.lora and self.lora.adapter_source is None and self.load_states:
            self.load_states = {"model"}  # a new LoRA run on a base model: its weights only
            self.notes.append(f"LoRA on the base model {self.lora.base_source()}: weights only, step 0")
        weights_source = self.lora.base_source() if self.lora else self.ckpt_source
        load_weights = weights_source is not None and "model" in self.load_states
        if load_weights and not sharded:
            self._load_weights(model, weights_source)  # type: ignore[arg-type]
        if self.lora:
            self._say(f"LoRA: adapters on {len(self.lora.attach(model, self.seed))} modules")
        model.train()
        if self.options.activation_checkpointing or spec.backend.activation_checkpointing:
            apply_activation_checkpointing(model)
        if self.options.compile or spec.backend.compile:
            compile_model(model)  # compiles the blocks in place
        self.model: torch.nn.Module = model
        loss_module = LossModule(model, spec.model.loss_scaling, spec.model.loss_weight)
        self.wrapped = parallel.wrap_model(loss_module, self.dist, self.strategy, block_types=(Block,))
        if sharded:
            # Rotary tables are no buffers: the Transformer computes and caches them on the first forward.
            loss_module.to_empty(device=self.device)
            if load_weights:
                self._load_weights(model, weights_source)  # type: ignore[arg-type]
            else:
                self._initialize_shards(model)
            if self.lora:
                init_adapters(model, self.seed, copy=parallel.copy_full_into)
        if self.lora:
            self.lora.load_adapters(model, self.device, copy=parallel.copy_full_into)
        inner = parallel.unwrap(self.model)
        groups = optimizer_param_groups(inner, spec.model)
        self.optimizer = build_optimizer(spec.optimizer, groups)
        self.schedule = LRSchedule(
            self.optimizer, build_schedule(spec.schedulers, optimizer_learning_rate(spec.optimizer))
        )
        self.scaler = LossScaler(spec.precision)

    def _restore(self) -> tuple[int, int]:
        """Load optimizer/schedule/scaler/RNG/data position; returns (start step, samples seen)."""
        state.seed_everything(self.seed + self.dist.rank)
        if self.ckpt_source is None or self.load_states <= {"model"}:
            return 0, 0
        train_state = state.read_train_state(self.ckpt_source)
        step = int(train_state["step"]) if "global_step" in self.load_states else 0
        if "optimizer" in self.load_states:
            state.load_optimizer_state(self.wrapped, self.optimizer, self.ckpt_source, train_state)
        if "lr_scheduler" in self.load_states:
            self.schedule.load_state_dict(train_state["scheduler"])
        else:
            self.schedule.load_state_dict({"step": step})
        if "grad_scaler" in self.load_states and train_state.get("loss_scaler"):
            self.scaler.load_state_dict(train_state["loss_scaler"])
        if "rng" in self.load_states:
            rngs = train_state.get("rng") or []
            if self.dist.rank < len(rngs) and train_state.get("world_size") == self.dist.world_size:
                state.restore_rng(rngs[self.dist.rank])
            else:
                self.notes.append(
                    f"checkpoint written by {train_state.get('world_size')} processes; RNG reseeded for "
                    f"{self.dist.world_size}"
                )
        samples = int(train_state.get("samples_seen", 0)) if "dataloader" in self.load_states else 0
        self.best_eval = train_state.get("progress", {}).get("best_eval_loss")
        return step, samples

    # ------------------------------------------------------------------------------------ checkpoints
    def _save(self, step: int, samples_seen: int) -> Path:
        d = self.dist
        path = self.model_dir / checkpoint_dir_name(self.spec, step)
        rngs = parallel.all_gather_object(state.capture_rng(), d)
        staged: Path | None = None
        optim_state: dict[str, Any] | None = None
        weights: Any
        if d.enabled and self.strategy == "fsdp":
            staged = temp_path(self.model_dir / f"optim-{step}", "dcp")  # one name on every rank
            state.save_sharded_optimizer(self.wrapped, self.optimizer, staged)
            # Gathered one tensor at a time on every rank (the same order everywhere) and streamed to
            # rank 0's shard writer: rank 0 never holds more than a shard of the full model.
            weights = state.gathered_weights(parallel.unwrap(self.model), d.is_main)
        else:
            optim_state = state.optimizer_state(self.wrapped, self.optimizer)
            weights = {k: v.detach().to("cpu") for k, v in parallel.unwrap(self.model).state_dict().items()}
        saved = LoraRun.select(weights) if self.lora else weights  # LoRA: the adapters only
        if d.is_main:
            train_state = {
                "step": step,
                "world_size": d.world_size,
                "global_batch_size": int(self.spec.train_data.batch_size),  # type: ignore[union-attr]
                "samples_seen": samples_seen,
                "optimizer": optim_state,
                "scheduler": self.schedule.state_dict(),
                "loss_scaler": self.scaler.state_dict(),
                "rng": rngs,
                "progress": {"best_eval_loss": self.best_eval},
            }
            try:
                save_checkpoint_dir(
                    path,
                    saved,
                    self.spec.model,
                    step=step,
                    config_yaml_dict=self.spec.raw or None,
                    tokenizer=recorded_tokenizer(self.spec.train_data.data_dir)
                    if self.spec.train_data
                    else None,
                    extra={"trained_by": "gptx train", "world_size": d.world_size}
                    | ({"lora": self.lora.meta()} if self.lora else {}),
                    write_extra_files=lambda tmp: state.write_train_state(tmp, train_state, staged),
                )
            finally:  # a failed write still takes part in the other ranks' gathers, then raises
                state.drain(weights)
            keep = self.spec.checkpoint.keep_last_n
            if keep:
                import shutil

                for _, old in list_checkpoints(self.model_dir)[:-keep]:
                    shutil.rmtree(old, ignore_errors=True)
        else:
            state.drain(weights)  # the gathers rank 0's writer pulls
        parallel.barrier(d)
        return path

    # ------------------------------------------------------------------------------------ steps
    def _train_step(self, batch: dict[str, torch.Tensor], micro: int, n_micro: int) -> tuple[float, float]:
        """One optimizer step on this rank's share of the global batch; returns (global loss, grad norm)."""
        spec, d = self.spec, self.dist
        by_tokens = spec.model.loss_scaling == "num_tokens"
        slices = [slice(i * micro, (i + 1) * micro) for i in range(n_micro)]
        # Token counts from the host copy of the batch: no device sync before the forward pass.
        host_mask = batch["attention_mask"]
        local = [float(host_mask[s].sum()) if by_tokens else float(micro) for s in slices]
        ids, labels, mask = (
            batch[k].to(self.device, non_blocking=True) for k in ("input_ids", "labels", "attention_mask")
        )
        extra = loader_model_inputs(batch, self.device)  # e.g. VSL's position_ids and attention_span
        (global_denom,) = parallel.all_reduce_sum([sum(local)], d)
        global_denom = max(global_denom, 1.0)
        loss_acc = torch.zeros((), dtype=torch.float64, device=self.device)
        self.callbacks.on_before_backward(self.model)
        device_type = self.device.type
        for i, s in enumerate(slices):
            weight = local[i] * d.world_size / global_denom
            with parallel.set_grad_sync(self.wrapped, i == n_micro - 1):
                with autocast(spec.precision, device_type):
                    loss = self.wrapped(ids[s], labels[s], mask[s], **{k: v[s] for k, v in extra.items()})[0]
                    weighted = loss * weight if weight != 1.0 else loss
                self.scaler.scale_loss(weighted).backward()
            loss_acc += weighted.detach().double() / d.world_size
        (step_loss,) = parallel.all_reduce_sum([float(loss_acc)], d)
        grad_norm, stepped = self._optimizer_step(step_loss)
        if stepped:  # ModelZoo holds the schedule back on steps that dynamic loss scaling skips
            self.schedule.step()
        return step_loss, grad_norm

    def _optimizer_step(self, step_loss: float) -> tuple[float, bool]:
        """Unscale, clip and step; returns (grad norm, whether the optimizer stepped)."""
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        if not math.isfinite(step_loss):
            return math.nan, False
        self.scaler.unscale_([p.grad for p in params if p.grad is not None])
        self.callbacks.on_before_optimizer_step(self.model)
        # gptx's AdamW folds the clipping multiplier into its fused update; other optimizers get
        # clipped gradients.
        folds = isinstance(self.optimizer, AdamW)
        grad_norm, multiplier = clip_gradients(
            params,
            self.spec.precision.max_gradient_norm,
            self.spec.precision.max_gradient_value,
            scale_grads=not folds,
        )
        stepped = self.scaler.update(math.isfinite(grad_norm))
        if stepped:
            if isinstance(self.optimizer, AdamW):
                self.optimizer.step(grad_multiplier=multiplier)
            else:
                self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return grad_norm, stepped

    @torch.no_grad()
    def _evaluate(self) -> dict[str, float] | None:
        """Validation metrics with `gptx eval`'s definitions (eval.evaluate.loss_metrics): `loss` is the
        mean of the step losses (each the global batch's, in the model's loss_scaling), `lm_perplexity`
        exp(token cross-entropy sum / loss tokens), `accuracy` over loss tokens. It runs through the
        wrapped model so that FSDP2 gathers its shards."""
        spec, d = self.spec, self.dist
        if spec.val_data is None:
            return None
        loader = build_dataloader(
            spec.val_data, rank=d.rank, world_size=d.world_size, seed=self.seed, infinite=False
        )
        # every rank must run the same number of forwards (FSDP2 all-gathers in each): full batches only
        full_batches = loader.samples_per_epoch // loader.global_batch_size
        n = min(spec.loop.eval_steps or full_batches, full_batches)
        per_step: list[float] = []  # (ce sum, loss tokens, rows) per step, then the correct count
        correct = 0.0
        self.wrapped.eval()
        try:
            for _, batch in zip(range(n), loader, strict=False):
                ids, labels, mask = (
                    batch[k].to(self.device) for k in ("input_ids", "labels", "attention_mask")
                )
                with autocast(spec.precision, self.device.type):
                    _, loss_sum, ntok, ncorrect = self.wrapped(
                        ids, labels, mask, **loader_model_inputs(batch, self.device)
                    )
                per_step += [float(loss_sum), float(ntok), float(ids.shape[0])]
                correct += float(ncorrect)
        finally:
            self.wrapped.train()
            parallel.reshard(self.wrapped)
        totals = parallel.all_reduce_sum([*per_step, correct], d)
        steps = [totals[i : i + 3] for i in range(0, len(totals) - 1, 3)]
        tokens = sum(t for _, t, _ in steps)
        if not steps or tokens == 0:
            return None
        if spec.model.loss_scaling == "num_tokens":
            step_losses = [ce / max(t, 1.0) for ce, t, _ in steps]
        else:
            step_losses = [ce / rows * spec.model.loss_weight for ce, _, rows in steps]
        mean_ce = sum(ce for ce, _, _ in steps) / tokens
        return {
            "loss": sum(step_losses) / len(step_losses),
            "lm_perplexity": math.exp(mean_ce) if mean_ce < 700 else math.inf,
            "accuracy": totals[-1] / tokens,
            "num_tokens": int(tokens),
            "eval_steps": len(steps),
        }

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

    def check_fits(self) -> tuple[int, int, int]:
        """Before anything is allocated: the batch layout, the memory guard, then the data (a missing
        data_dir names the `gptx preprocess` command). Returns the batch layout."""
        spec = self.spec
        assert spec.train_data is not None
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
        build_dataloader(spec.train_data, world_size=self.dist.world_size)
        if spec.val_data is not None and spec.loop.eval_frequency:
            build_dataloader(spec.val_data, world_size=self.dist.world_size, infinite=False)
        return layout

    def _install_signal_handlers(self) -> dict[int, Any]:
        """SIGINT/SIGTERM ask for a checkpoint at the next step boundary; returns the previous handlers."""

        def request_stop(signum: int, _frame: Any) -> None:
            self.stop_signal = signal.Signals(signum).name
            signal.signal(signum, signal.SIG_DFL)  # a second signal ends the process at once

        if threading.current_thread() is not threading.main_thread():
            return {}  # signals reach only the main thread (library use from a thread)
        previous: dict[int, Any] = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, request_stop)
        return previous

    @staticmethod
    def _restore_signal_handlers(previous: dict[int, Any]) -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    def run(self) -> TrainResult:
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
        start, samples_seen = self._restore()
        loader.load_state_dict({"position": samples_seen})
        end = self._end_step(start)
        msl = loader.max_sequence_length
        if msl > spec.model.max_position_embeddings:
            raise DataError(
                f"data max_sequence_length {msl} exceeds model.max_position_embeddings "
                f"{spec.model.max_position_embeddings}"
            )
        tokens_per_step = global_batch * msl
        self.callbacks = build_callbacks(spec, self.model_dir, enabled=d.is_main)  # ComputeNorm, loggers
        if d.is_main:
            truncate_metrics(self.model_dir, start)
            self.log = MetricsLogger(
                self.model_dir, total_steps=end, start_step=start, console=self.options.console,
                tensorboard_dir=self.callbacks.tensorboard_dir, sinks=self.callbacks.sinks,
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
        flops_per_token = _flops_per_token(spec, msl)
        peak = peak_tflops(d.device)
        previous_handlers = self._install_signal_handlers()
        try:
            last_ckpt: Path | None = None
            if spec.checkpoint.save_initial_checkpoint and start == 0:
                last_ckpt = self._save(0, samples_seen)
            ckpt_every = spec.checkpoint.steps
            log_every = max(1, int(spec.logging.log_steps or 1))
            step, stopped_by, final_loss = start, "completed", None
            losses: list[float] = []
            t_start = t_window = time.perf_counter()
            window_steps = 0
            it = iter(loader)
            while step < end:
                batch = next(it)
                _check_token_ids(batch, spec.model.vocab_size, spec.train_data.data_dir)  # every batch: CPU
                lr = self.schedule.lr
                loss, grad_norm = self._train_step(batch, micro, n_micro)
                if step == start:
                    _freeze_gc()
                if not math.isfinite(loss):
                    raise GptxError(
                        f"loss is {loss} at step {step + 1}; training stopped",
                        hint=f"resume from {last_ckpt}"
                        if last_ckpt
                        else "check the learning rate, initializers and data",
                    )
                step += 1
                samples_seen = loader.position
                window_steps += 1
                final_loss = loss
                losses.append(loss)
                if step % log_every == 0 or step == end:
                    now = time.perf_counter()
                    tokens_per_s = tokens_per_step * window_steps / max(now - t_window, 1e-9)
                    tflops = tokens_per_s * flops_per_token / 1e12 if flops_per_token else None
                    if self.log is not None:
                        self.log.log(
                            {
                                "step": step,
                                "split": "train",
                                "loss": loss,
                                "lr": lr,
                                "grad_norm": grad_norm,
                                "tokens_per_s": tokens_per_s,
                                "tflops": tflops,
                                "mfu": tflops / (peak * d.world_size) if tflops and peak else None,
                                "loss_scale": self.scaler.scale if self.scaler.dynamic else None,
                                "memory_gib": _memory_gib(self.device),
                                **self.callbacks.metrics(),
                            }
                        )
                    t_window, window_steps = now, 0
                paused = time.perf_counter()  # eval and checkpoint time stays out of tokens/s
                if self._is_eval_step(step, start, end):
                    result = self._evaluate()
                    if result is not None:
                        if self.best_eval is None or result["loss"] < self.best_eval:
                            self.best_eval = result["loss"]
                        if self.log is not None:
                            self.log.log({"step": step, "split": "eval", **result})
                (stop,) = parallel.all_reduce_sum([1.0 if self.stop_signal else 0.0], d)
                if (ckpt_every and step % ckpt_every == 0) or step == end or stop:
                    last_ckpt = self._save(step, samples_seen)
                t_window += time.perf_counter() - paused
                if stop:
                    stopped_by = "signal"
                    self._say(
                        f"stopped by {self.stop_signal or 'a signal on another rank'} at step {step}; saved {last_ckpt}"
                    )
                    break
            seconds = time.perf_counter() - t_start
            tokens = (step - start) * tokens_per_step
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
                    ("best eval loss", f"{self.best_eval:.4f}" if self.best_eval is not None else "-"),
                    ("throughput", f"{tokens / max(seconds, 1e-9):,.0f} tokens/s"),
                    ("last checkpoint", str(last_ckpt) if last_ckpt else "-"),
                ]
                self.log.summary(rows, losses)
                self.log.close()
            return TrainResult(
                start_step=start,
                end_step=step,
                final_loss=final_loss,
                best_eval_loss=self.best_eval,
                tokens=tokens,
                seconds=seconds,
                stopped_by=stopped_by,
                last_checkpoint=str(last_ckpt) if last_ckpt else None,
                train_losses=losses,
            )
        finally:
            gc.unfreeze()
            self._restore_signal_handlers(previous_handlers)
            if self.log is not None:
                self.log.close()  # also on errors: the progress bar gives the terminal back


def _freeze_gc() -> None:
    """Move every object alive after the first step (model, optimizer, compiled code, loader) out of the
    garbage collector's reach until training ends. A full collection otherwise walks them all: half a
    million objects, ~0.3 s, every few dozen steps, a stall the GPU waits out. (torchtitan controls its
    collections for the same reason.)"""
    gc.collect()
    gc.freeze()


def _check_token_ids(batch: dict[str, torch.Tensor], vocab_size: int, data_dirs: list[str]) -> None:
    top = int(torch.maximum(batch["input_ids"].max(), batch["labels"].max()))
    if top >= vocab_size:
        raise DataError(
            f"{', '.join(data_dirs)}: token id {top} does not fit model.vocab_size {vocab_size}",
            hint="the data was tokenized with a larger vocabulary than the config's model",
        )


def _flops_per_token(spec: RunSpec, msl: int) -> float:
    return float(flops_per_token(spec.model, msl))


def _memory_gib(device: torch.device) -> float | None:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
    except (ImportError, OSError):
        return None
