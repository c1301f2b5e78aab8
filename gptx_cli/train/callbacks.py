"""ModelZoo's `trainer.init.callbacks` and `loggers` that gptx runs (names and settings are checked in
config/compat.py; anything else is a config error).

- `ComputeNorm` (ModelZoo trainer/callbacks/norm.py): before the backward pass, `model_wise_params_norm`
  = sqrt(sum ||p||^2) over trainable parameters; before the optimizer step (after loss-scale unscaling,
  before clipping), `model_wise_grad_norm` = sqrt(sum ||g||^2) and `per_layer_grad_norm/layer_<i>` per
  `layers.<i>.` block. They go into the train record: metrics.jsonl and TensorBoard.
- `TensorBoardLogger`: TensorBoard events under `summary_dir` (or `log_dir`) instead of model_dir
  (gptx keeps its `train/` and `eval/` sub-directories there, ModelZoo's `legacy_event_dirs` layout).
- `WandbLogger`: every record also goes to `wandb.log` (project, group, run_id, run_name, job_type,
  tags, resume, entity as ModelZoo's; the run directory is model_dir, so `WANDB_MODE=offline` writes
  `model_dir/wandb/offline-run-*`). wandb is an optional extra, imported when the logger is used.

`REGISTRY` maps a callback or logger name to its class: a new one registers here and in compat.py.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from gptx_cli.errors import ConfigError

_LAYER = re.compile(r".*(layers\.)(\d+)(\.).*")


class Callback:
    """Hooks the trainer calls; every one is optional. Built as `Cls(run_dir, **settings)`."""

    def __init__(self, run_dir: Path, **settings: Any) -> None:
        pass

    def on_before_backward(self, model: Any) -> None: ...

    def on_before_optimizer_step(self, model: Any) -> None: ...

    def metrics(self) -> dict[str, float]:
        return {}


class ComputeNorm(Callback):
    def __init__(self, run_dir: Path, **_: Any) -> None:
        self._metrics: dict[str, float] = {}

    def on_before_backward(self, model: Any) -> None:
        import torch

        with torch.no_grad():
            sq = sum(
                (p.detach().float().norm() ** 2 for p in model.parameters() if p.requires_grad),
                torch.zeros(()),
            )
        self._metrics["model_wise_params_norm"] = float(torch.sqrt(sq))

    def on_before_optimizer_step(self, model: Any) -> None:
        import torch

        total = 0.0
        layers: dict[str, float] = {}
        with torch.no_grad():
            for name, p in model.named_parameters():
                if p.grad is None:
                    continue
                g2 = float(p.grad.detach().float().norm() ** 2)
                total += g2
                m = _LAYER.match(name)
                if m:
                    layers[m.group(2)] = layers.get(m.group(2), 0.0) + g2
        self._metrics["model_wise_grad_norm"] = total**0.5
        for layer, v in layers.items():
            self._metrics[f"per_layer_grad_norm/layer_{layer}"] = v**0.5

    def metrics(self) -> dict[str, float]:
        return dict(self._metrics)


class TensorBoardLogger(Callback):
    def __init__(
        self, run_dir: Path, summary_dir: str | None = None, log_dir: str | None = None, **_: Any
    ) -> None:
        where = summary_dir or log_dir
        self.tensorboard_dir = Path(where) if where else run_dir


class WandbLogger(Callback):
    """Records -> wandb.log, with ModelZoo's run-resume rules for model_dir/wandb."""

    def __init__(self, run_dir: Path, **settings: Any) -> None:
        try:
            import wandb
        except ImportError:
            raise ConfigError(
                "loggers: WandbLogger needs the wandb package: pip install 'gptx[wandb]'"
            ) from None
        resume = settings.get("resume", "auto")
        run_id = settings.get("run_id")
        previous = sorted((run_dir / "wandb").glob("*run-*"))
        if previous and run_id is None and resume in ("allow", "auto", "must"):
            run_id = previous[-1].name.rsplit("-", 1)[-1]
        if previous and resume == "never":
            raise ConfigError(f"loggers: WandbLogger resume: never, but {run_dir / 'wandb'} holds a run")
        run_dir.mkdir(parents=True, exist_ok=True)
        self.wandb = wandb
        self.run = wandb.init(
            dir=str(run_dir),
            project=settings.get("project"),
            group=settings.get("group"),
            name=settings.get("run_name"),
            job_type=settings.get("job_type"),
            tags=settings.get("tags"),
            entity=settings.get("entity"),
            id=run_id,
            resume=resume,
        )
        self.run.define_metric("global_step")
        self.run.define_metric("*", step_metric="global_step", step_sync=True)

    def log(self, record: dict[str, Any]) -> None:
        split = record.get("split", "train")
        m: dict[str, Any] = {"global_step": int(record["step"])}
        for k, v in record.items():
            if k not in ("step", "split") and isinstance(v, (int, float)) and not isinstance(v, bool):
                m[k if split == "train" else f"{split}/{k}"] = v
        self.run.log(m)

    def close(self) -> None:
        self.run.finish()


REGISTRY: dict[str, type[Callback]] = {
    "ComputeNorm": ComputeNorm,
    "TensorBoardLogger": TensorBoardLogger,
    "WandbLogger": WandbLogger,
}


class Callbacks:
    """The run's callbacks and loggers, built on the main process (others get an empty set)."""

    def __init__(self, entries: list[tuple[str, dict[str, Any]]], run_dir: Path, enabled: bool) -> None:
        self.items: list[Callback] = []
        if enabled:
            # Names without a class here are run elsewhere (Lora: model/lora.py through the trainer).
            self.items = [REGISTRY[name](run_dir, **params) for name, params in entries if name in REGISTRY]
        tb = [c for c in self.items if isinstance(c, TensorBoardLogger)]
        self.tensorboard_dir: Path | None = tb[-1].tensorboard_dir if tb else None
        self.sinks = [c for c in self.items if isinstance(c, WandbLogger)]

    def on_before_backward(self, model: Any) -> None:
        for c in self.items:
            c.on_before_backward(model)

    def on_before_optimizer_step(self, model: Any) -> None:
        for c in self.items:
            c.on_before_optimizer_step(model)

    def metrics(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for c in self.items:
            out.update(c.metrics())
        return out


def build_callbacks(spec: Any, run_dir: Path, enabled: bool = True) -> Callbacks:
    # Lora changes the model before training (model/lora.py, the trainer's LoraRun): no step hooks here.
    callbacks = [(name, params) for name, params in spec.callbacks if name != "Lora"]
    return Callbacks([*callbacks, *spec.loggers], run_dir, enabled)
