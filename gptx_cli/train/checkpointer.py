"""Checkpointing for the trainer as one component: which checkpoint a run starts from, loading its
weights and training state, and writing checkpoints (one process, DDP, FSDP2) with keep-last-N.

    source, load_states = resume_source(spec, model_dir, checkpoint_path, load_states, ...)
    ckpt = Checkpointer(spec, dist=..., source=source, load_states=load_states, lora=lora_run, ...)
    ckpt.load_weights(model)            # when ckpt.loads_weights (before or after FSDP2 wrapping)
    ckpt.attach(model, wrapped, optimizer, schedule, scaler)
    step, samples_seen = ckpt.load()    # optimizer, schedule, loss scaler, RNG, data position
    ckpt.save(step, samples_seen)       # -> the checkpoint directory, written in the background
    ckpt.poll()                         # each step: note a finished save (ckpt.last), raise its error
    ckpt.wait()                         # at a stop and at the end: the pending save is complete

The resume source, in ModelZoo's order: an explicit checkpoint path (a model_dir stands for its latest
checkpoint), else the latest checkpoint in model_dir when `autoload_last_checkpoint`; continue-pretrain
takes only the weights of its path, unless its own model_dir already holds a checkpoint (an
interrupted continue-pretrain run resumes from it). The checkpoint directory layout is described in
`gptx_cli.checkpoint`; the train state in `train.state`.

Background saves (the default; `--sync-checkpoints` writes in the loop instead). At the save step
every rank takes a staged copy of what the checkpoint holds (weights and train state on the CPU; under
FSDP2 the full weights are gathered into rank 0's host memory and each rank's optimizer shard is staged
by DCP's `async_save`, whose collectives run on a process group of their own), and a thread writes it:
the same files, under the same temporary name, renamed when complete. One save is in flight at a time:
the next save, a stop and the end of training wait for it; its error fails the run with the same
one-line message a synchronous write gives.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from gptx_cli import distributed
from gptx_cli.checkpoint import latest_checkpoint, list_checkpoints, locate, resolve, save_checkpoint_dir
from gptx_cli.config.spec import RunSpec
from gptx_cli.data.params import tokenizer_of
from gptx_cli.errors import CheckpointError, GptxError, UsageError
from gptx_cli.fsutil import temp_path
from gptx_cli.model.lora import is_adapter
from gptx_cli.train import parallel, state
from gptx_cli.train.lora import LoraRun


def checkpoint_dir_name(spec: RunSpec, step: int) -> str:
    name = spec.checkpoint.checkpoint_name or "checkpoint_{step}"
    name = name.format(step=step) if "{step}" in name else f"{name}_{step}"
    return name[: -len(".mdl")] if name.endswith(".mdl") else name


def resume_source(
    spec: RunSpec,
    model_dir: Path,
    checkpoint_path: str | None,
    load_states: str | None,
    continue_pretrain: bool,
    notes: list[str],
) -> tuple[Path | None, set[str]]:
    """Which checkpoint a run starts from, and which of its states it loads (--load-checkpoint-states)."""
    explicit = checkpoint_path or spec.ckpt_path
    latest = latest_checkpoint(model_dir) if spec.checkpoint.autoload_last_checkpoint else None
    if continue_pretrain:
        if latest is not None:  # an interrupted continue-pretrain run resumes from its own checkpoint
            notes.append(f"resuming the continued pretraining from {latest}")
            return latest, state.parse_load_states("all")  # its base path may be gone (--lora-save-base)
        if not explicit:
            raise UsageError(
                "continue-pretrain needs --checkpoint-path (a gptx checkpoint or a Hugging Face dir)"
            )
        return locate(explicit)[0], {"model"}
    if explicit:
        return locate(explicit)[0], state.parse_load_states(load_states)  # a model_dir: its latest
    if latest is not None:
        notes.append(f"autoload_last_checkpoint: resuming from {latest}")
        return latest, state.parse_load_states(load_states)
    return None, set()


class Checkpointer:
    def __init__(
        self,
        spec: RunSpec,
        *,
        dist: distributed.Dist,
        model_dir: Path,
        strategy: str,
        seed: int,
        source: Path | None,
        load_states: set[str],
        lora: LoraRun | None = None,
        notes: list[str] | None = None,
        say: Callable[[str], None] = print,
        background: bool = True,
    ) -> None:
        self.spec, self.dist, self.model_dir = spec, dist, model_dir
        self.strategy, self.seed = strategy, seed
        self.notes = notes if notes is not None else []
        self.say = say
        self.progress: dict[str, Any] = {"best_eval_loss": None}  # saved with the train state
        self.last: Path | None = None  # the latest checkpoint written or resumed from
        self._objects: tuple[Any, ...] | None = None
        self.lora = lora  # weights from its base; checkpoints of the adapters (and the base)
        self.source, self.load_states = source, load_states
        self.background = background  # write checkpoints while training goes on (--sync-checkpoints: no)
        self._pending: _Pending | None = None  # the background save in flight
        self._unsynced = False  # a save whose completion the ranks have not agreed on yet (wait())

    @property
    def loads_weights(self) -> bool:
        source = self.lora.base_source() if self.lora else self.source
        return source is not None and "model" in self.load_states

    # ------------------------------------------------------------------------------------ loading
    def load_weights(self, model: torch.nn.Module) -> None:
        """Copy a gptx checkpoint's or a Hugging Face dir's weights into `model`, one tensor at a time: a
        tensor is read, moved to the device and copied into its parameter (under FSDP2 only this
        process's shard of it is kept), so neither the host nor the device holds a second model."""
        source = self.lora.base_source() if self.lora else self.source
        assert source is not None
        found = resolve(source)
        device = torch.device(self.dist.device)
        params = {n: p for n, p in model.named_parameters() if not is_adapter(n)}  # no buffers; LoRA adapters
        loaded: set[str] = set()
        extra: list[str] = []
        with self.lora.open_base(found.config) if self.lora else found.open_weights() as tensors:
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
                parallel.copy_full_into(param, tensor.to(device, param.dtype))
                loaded.add(name)
        missing = [name for name in params if name not in loaded]
        if missing:
            raise CheckpointError(f"{source}: weight {missing[0]} missing (the config's model has it)")
        if extra:
            raise CheckpointError(
                f"{source}: weights the config's model does not have: {', '.join(sorted(extra)[:5])}"
            )

    def _note_config_differences(self, ckpt_cfg: Any, source: Path) -> None:
        for name in self.spec.model.differences(ckpt_cfg) if self.dist.is_main else ():
            theirs, ours = getattr(ckpt_cfg, name), getattr(self.spec.model, name)
            self.say(
                f"note: {source} was made with model.{name}={theirs!r}; training uses the config's {ours!r}"
            )

    def attach(
        self,
        model: torch.nn.Module,
        wrapped: Any,
        optimizer: torch.optim.Optimizer,
        schedule: Any,
        scaler: Any,
    ) -> None:
        """The objects whose state a checkpoint holds (the bare model, its DDP/FSDP2 wrapper, ...)."""
        self._objects = (model, wrapped, optimizer, schedule, scaler)

    def load(self) -> tuple[int, int]:
        """Load optimizer/schedule/scaler/RNG/data position; returns (start step, samples seen)."""
        assert self._objects is not None, "attach() first"
        _, wrapped, optimizer, schedule, scaler = self._objects
        state.seed_everything(self.seed + self.dist.rank)
        if self.source is None or self.load_states <= {"model"}:
            return 0, 0
        train_state = state.read_train_state(self.source)
        step = int(train_state["step"]) if "global_step" in self.load_states else 0
        if "optimizer" in self.load_states:
            state.load_optimizer_state(wrapped, optimizer, self.source, train_state)
        if "lr_scheduler" in self.load_states:
            schedule.load_state_dict(train_state["scheduler"])
        else:
            schedule.load_state_dict({"step": step})
        if "grad_scaler" in self.load_states and train_state.get("loss_scaler"):
            scaler.load_state_dict(train_state["loss_scaler"])
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
        self.progress.update(train_state.get("progress") or {})
        return step, samples

    # ------------------------------------------------------------------------------------ saving
    def save(self, step: int, samples_seen: int) -> Path:
        """Write `checkpoint_<step>` (collective: every rank calls it at the same step) and prune to
        keep_last_n; returns its path. In the background (the default) this waits for the previous
        save, takes a staged copy of the state and returns: the write goes on while training does, and
        the checkpoint is renamed into place when complete (`poll` notes that, `wait` waits for it)."""
        assert self._objects is not None, "attach() first"
        self.wait()  # one save at a time
        model, wrapped, optimizer, schedule, scaler = self._objects
        d, spec, background = self.dist, self.spec, self.background
        path = self.model_dir / checkpoint_dir_name(spec, step)
        rngs = distributed.all_gather_object(state.capture_rng(), d)
        staged: Path | None = None
        optim_state: dict[str, Any] | None = None
        optim_written: Callable[[], None] | None = None
        weights: Any = None
        if parallel.is_sharded(d, self.strategy):
            staged = temp_path(self.model_dir / f"optim-{step}", "dcp")  # one name on every rank
            if background:
                group = distributed.checkpoint_group(d)
                optim_written = state.save_sharded_optimizer_async(wrapped, optimizer, staged, group)
            else:
                state.save_sharded_optimizer(wrapped, optimizer, staged)
            # Gathered one tensor at a time on every rank (the same order everywhere). Written now, the
            # stream goes to rank 0's shard writer, which never holds more than a shard of the model;
            # in the background rank 0 keeps the whole model in host memory until it is written.
            weights = state.gathered_weights(parallel.unwrap(model), d.is_main)
            if not d.is_main:
                state.drain(weights)  # the gathers rank 0 pulls (sync) or collects here (background)
            elif background:
                weights = dict(weights)
        else:
            optim_state = state.optimizer_state(wrapped, optimizer, staged=background) if d.is_main else None
            if d.is_main:
                weights = {
                    k: v.detach().to("cpu", copy=background)
                    for k, v in parallel.unwrap(model).state_dict().items()
                }
        write: Callable[[], None] | None = None
        if d.is_main:
            train_state = {
                "step": step,
                "world_size": d.world_size,
                "global_batch_size": int(spec.train_data.batch_size),  # type: ignore[union-attr]
                "samples_seen": samples_seen,
                "optimizer": optim_state,
                "scheduler": state.staged_copy(schedule.state_dict()),
                "loss_scaler": state.staged_copy(scaler.state_dict()),
                "rng": rngs,
                "progress": dict(self.progress),
            }
            write = self._writer(
                path, step, self.lora.select(weights) if self.lora else weights, train_state, staged
            )
        job = _join(optim_written, write)
        self._unsynced = True
        if background:
            self._pending = _Pending(step, path, job)
        else:
            started = time.perf_counter()
            job()
            self._finished(step, path, time.perf_counter() - started, background=False)
            self.wait()
        return path

    def _writer(
        self, path: Path, step: int, weights: Any, train_state: dict[str, Any], staged: Path | None
    ) -> Callable[[], None]:
        """Rank 0's write of the checkpoint directory (`save_checkpoint_dir`: a temporary name, renamed
        when complete), then keep_last_n."""
        spec = self.spec
        tokenizer = tokenizer_of(spec.train_data.data_dir) if spec.train_data else None
        extra = {"trained_by": "gptx train", "world_size": self.dist.world_size} | (
            {"lora": self.lora.meta()} if self.lora else {}
        )

        def extra_files(tmp: Path) -> None:
            _hold_for_tests(step)
            state.write_train_state(tmp, train_state, staged)

        def write() -> None:
            try:
                save_checkpoint_dir(
                    path,
                    weights,
                    spec.model,
                    step=step,
                    config_yaml_dict=spec.raw or None,
                    tokenizer=tokenizer,
                    extra=extra,
                    write_extra_files=extra_files,
                )
            finally:  # a failed write still takes part in the other ranks' gathers, then raises
                state.drain(weights)
            self._prune()

        return write

    def poll(self) -> None:
        """At a step boundary (every rank): note a background save that has finished, or raise its error."""
        if self._pending is not None and self._pending.done():
            self._reap()

    def wait(self) -> None:
        """Collective (every rank at the same step): return when the pending save is complete on every
        rank; raises its error. Called by the next save, at a stop and at the end of training."""
        if self._pending is not None:
            self._reap()
        if self._unsynced:
            self._unsynced = False
            distributed.barrier(self.dist)

    def abandon(self) -> None:
        """On an error: let the pending save finish (no collective) and only note its own failure."""
        pending, self._pending = self._pending, None
        if pending is None:
            return
        pending.thread.join()
        if pending.error is not None:
            self.say(
                f"note: {pending.path} was not written: {_as_checkpoint_error(pending.path, pending.error)}"
            )
        else:
            self._finished(pending.step, pending.path, pending.seconds, background=True)

    def _reap(self) -> None:
        pending, self._pending = self._pending, None
        assert pending is not None
        pending.thread.join()
        if pending.error is not None:
            err = _as_checkpoint_error(pending.path, pending.error)
            if err is pending.error:
                raise err
            raise err from pending.error
        self._finished(pending.step, pending.path, pending.seconds, background=True)

    def _finished(self, step: int, path: Path, seconds: float, *, background: bool) -> None:
        self.last = path
        if self.dist.is_main:
            how = ", written in the background" if background else ""
            self.say(f"saved {path} ({seconds:.1f} s{how})")

    def _prune(self) -> None:
        keep = self.spec.checkpoint.keep_last_n
        if keep:
            for _, old in list_checkpoints(self.model_dir)[:-keep]:
                shutil.rmtree(old, ignore_errors=True)


# Test-only (tests/train/test_async_checkpoint.py): GPTX_TEST_HOLD_SAVE=DIR holds the write of
# checkpoint N, after its weights and before its train state, until the file DIR/N exists, so a test
# can see training go on during a save and kill a run in the middle of one. Read here only.
ENV_TEST_HOLD_SAVE = "GPTX_TEST_HOLD_SAVE"
_HOLD_LIMIT_SECONDS = 600


def _hold_for_tests(step: int) -> None:
    where = os.environ.get(ENV_TEST_HOLD_SAVE)
    if not where:
        return
    release, deadline = Path(where) / str(step), time.monotonic() + _HOLD_LIMIT_SECONDS
    while not release.exists():
        if time.monotonic() > deadline:
            raise CheckpointError(f"{ENV_TEST_HOLD_SAVE}: {release} never appeared")
        time.sleep(0.02)


class _Pending:
    """A checkpoint being written by a thread of its own; `error` is what the write raised."""

    def __init__(self, step: int, path: Path, job: Callable[[], None]) -> None:
        self.step, self.path = step, path
        self.error: BaseException | None = None
        self.seconds = 0.0
        self.thread = threading.Thread(target=self._run, args=(job,), name=f"gptx-save-{step}", daemon=True)
        self.thread.start()

    def _run(self, job: Callable[[], None]) -> None:
        started = time.perf_counter()
        try:
            job()
        except BaseException as err:  # handed to the main thread, which raises it
            self.error = err
        finally:
            self.seconds = time.perf_counter() - started

    def done(self) -> bool:
        return not self.thread.is_alive()


def _join(*jobs: Callable[[], None] | None) -> Callable[[], None]:
    def run() -> None:
        for job in jobs:
            if job is not None:
                job()

    return run


def _as_checkpoint_error(path: Path, err: BaseException) -> GptxError:
    """A background write's failure as the one-line error a synchronous one gives."""
    if isinstance(err, GptxError):
        return err
    if isinstance(err, OSError):
        return CheckpointError(
            f"{path}: cannot write the checkpoint: {err.strerror or err}",
            hint="free some space or choose another --model-dir; earlier checkpoints are intact",
        )
    return CheckpointError(f"{path}: the checkpoint write failed: {type(err).__name__}: {err}")
