"""Config loading: ModelZoo YAML (trainer or legacy layout) -> the typed RunSpec. Torch-free.

    from gptx_cli.config import load_run_spec
    spec = load_run_spec("configs/tiny_gptj.yaml", overrides=["loop.max_steps=5"])

Overrides are `dotted.key=value` in the trainer layout (`trainer.init.loop.max_steps=5`); the
`trainer.` prefix and, before an init section, `trainer.init.` may be left out
(`init.loop.max_steps=5`, `loop.max_steps=5`, `model.hidden_size=64`; `train_dataloader.batch_size=8`
means `trainer.fit.train_dataloader.batch_size`). Values are YAML. Overrides apply to legacy
configs after their conversion to the trainer layout.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from gptx_cli.config.load import ConfigSource, apply_overrides, load_yaml, trainer_sources
from gptx_cli.config.spec import (
    BackendSpec,
    CheckpointSpec,
    DataSpec,
    LoggingSpec,
    LoopSpec,
    ModelConfig,
    OptimizerSpec,
    PrecisionSpec,
    RunSpec,
    SchedulerSpec,
)
from gptx_cli.config.validate import validate_source
from gptx_cli.errors import ConfigError, UsageError

__all__ = [
    "BackendSpec",
    "CheckpointSpec",
    "DataSpec",
    "LoggingSpec",
    "LoopSpec",
    "ModelConfig",
    "OptimizerSpec",
    "PrecisionSpec",
    "RunSpec",
    "SchedulerSpec",
    "load_config_source",
    "load_run_spec",
]


def load_config_source(
    path: str | Path, overrides: Iterable[str] = (), trainer_index: int = 0
) -> ConfigSource:
    """The chosen trainer of a config file, in the trainer layout, with overrides applied (no checks)."""
    sources = trainer_sources(load_yaml(path))
    if not 0 <= trainer_index < len(sources):
        raise UsageError(f"{path}: trainer index {trainer_index} out of range (the file has {len(sources)})")
    source = sources[trainer_index]
    apply_overrides(source, overrides)
    return source


def load_run_spec(path: str | Path, overrides: Iterable[str] = (), trainer_index: int = 0) -> RunSpec:
    """Load, validate and normalise one trainer of a config file.

    Raises ConfigError (`file:line:col: key.path: message`, exit 1) for an invalid config and
    UsageError (exit 2) for an unreadable file or a malformed override.
    """
    source = load_config_source(path, overrides, trainer_index)
    result = validate_source(source)
    if result.errors:
        more = len(result.errors) - 1
        hint = f"{more} more problem(s): run gptx validate-config {path}" if more else None
        raise ConfigError(result.errors[0].format(), hint=hint)
    spec = result.specs[0]
    spec.warnings = [w.format_warning() for w in result.warnings]
    return spec
