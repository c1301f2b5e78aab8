"""The gptx checkpoint directory (see docs/checkpoints.md):

    <model_dir>/checkpoint_<step>/
      gptx.json          format marker, step, ModelConfig dict, tokenizer, dtype, extras
      config.yaml        the resolved trainer-layout config of the run
      model.safetensors  weights in gptx naming (or shards + model.safetensors.index.json)
      train_state.pt     written by the trainer through `write_extra_files`

A checkpoint is written under a temporary name (`gptx_cli.fsutil.atomic_dir`) and renamed when complete,
so a crash mid-save leaves only a temporary directory that `latest_checkpoint` ignores.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gptx_cli.errors import CheckpointError
from gptx_cli.fsutil import atomic_dir, is_temp

if TYPE_CHECKING:
    import torch

    from gptx_cli.config.spec import ModelConfig
    from gptx_cli.weights import TensorSource

FORMAT = "gptx-checkpoint"
VERSION = 1
META_FILE = "gptx.json"
CONFIG_FILE = "config.yaml"
DEFAULT_SHARD_SIZE = 5 * 10**9
TOKENIZER_FILE = "tokenizer.json"
_STEP_RE = re.compile(r"checkpoint_(\d+)")


def save_checkpoint_dir(
    path: str | Path,
    state_dict_or_items: Mapping[str, torch.Tensor] | Iterable[tuple[str, torch.Tensor]],
    model_cfg: ModelConfig,
    *,
    step: int,
    config_yaml_dict: dict[str, Any] | None = None,
    tokenizer: str | None = None,
    extra: dict[str, Any] | None = None,
    write_extra_files: Callable[[Path], None] | None = None,
    shard_size_bytes: int = DEFAULT_SHARD_SIZE,
) -> Path:
    """Write a complete checkpoint directory at `path` (replacing one that is there); returns `path`.

    `state_dict_or_items` may be a generator of (name, tensor): tensors then stream to disk one shard
    at a time. `write_extra_files(tmp_dir)` adds files (e.g. train_state.pt) before the rename.
    """
    import yaml

    from gptx_cli.checksum import checksums_of
    from gptx_cli.weights import ShardedSafetensorsWriter, dtype_name

    with atomic_dir(path) as tmp:
        items = (
            state_dict_or_items.items() if isinstance(state_dict_or_items, Mapping) else state_dict_or_items
        )
        dtypes: set[str] = set()
        with ShardedSafetensorsWriter(tmp, shard_size_bytes) as writer:
            for name, tensor in items:
                dtypes.add(dtype_name(tensor.dtype))
                writer.add(name, tensor)
        if tokenizer and tokenizer.endswith(".json") and Path(tokenizer).is_file():
            # Copy a trained tokenizer.json in, so the checkpoint is self-contained.
            shutil.copyfile(tokenizer, tmp / TOKENIZER_FILE)
            tokenizer = TOKENIZER_FILE
        meta: dict[str, Any] = {
            "format": FORMAT,
            "version": VERSION,
            "step": int(step),
            "model": model_cfg.to_dict(),
            "tokenizer": tokenizer,
            "dtype": dtypes.pop() if len(dtypes) == 1 else sorted(dtypes),
            "num_parameters": writer.num_params,
            "checksums": checksums_of(tmp),
        }
        for key, value in (extra or {}).items():
            meta.setdefault(key, value)
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        if config_yaml_dict is None:
            from gptx_cli.convert.config import trainer_config_for_model

            config_yaml_dict = trainer_config_for_model(model_cfg)
        (tmp / CONFIG_FILE).write_text(yaml.safe_dump(config_yaml_dict, sort_keys=False))
        if write_extra_files is not None:
            write_extra_files(tmp)
    return Path(path)


def is_gptx_checkpoint(path: str | Path) -> bool:
    """True for a complete gptx checkpoint directory (gptx.json with the format marker)."""
    meta = Path(path) / META_FILE
    if not meta.is_file():
        return False
    try:
        return json.loads(meta.read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def read_checkpoint_meta(path: str | Path) -> dict[str, Any]:
    """The parsed gptx.json of a checkpoint directory; CheckpointError naming the file if it is not one."""
    meta_path = Path(path) / META_FILE
    if not meta_path.is_file():
        raise CheckpointError(f"{path}: not a gptx checkpoint (no {META_FILE})")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{meta_path}: corrupt checkpoint metadata ({err})") from err
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{meta_path}: not a gptx checkpoint (format is not {FORMAT!r})")
    if int(meta.get("version", 0)) > VERSION:
        raise CheckpointError(f"{meta_path}: checkpoint version {meta['version']} is newer than this gptx")
    if not isinstance(meta.get("model"), dict) or "step" not in meta:
        raise CheckpointError(f"{meta_path}: corrupt checkpoint metadata (needs 'model' and 'step')")
    return meta


def read_model_config(path: str | Path) -> ModelConfig:
    from gptx_cli.config.spec import ModelConfig

    return ModelConfig.from_dict(read_checkpoint_meta(path)["model"])


def open_checkpoint_weights(path: str | Path) -> TensorSource:
    """The weights of a gptx checkpoint directory, for lazy reading (`.keys()`, `.get(name)`), after
    checking the weight files against the checksums gptx.json records (unless --no-verify)."""
    from gptx_cli.checksum import verify_checkpoint
    from gptx_cli.weights import open_tensors

    verify_checkpoint(path, read_checkpoint_meta(path))
    return open_tensors(path)


def load_checkpoint_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """All weights of a gptx checkpoint in memory (for building a model; converters stream instead)."""
    with open_checkpoint_weights(path) as src:
        return dict(src.items())


def list_checkpoints(model_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints under `model_dir` as (step, path), by step; temporary dirs are skipped."""
    root = Path(model_dir)
    if not root.is_dir():
        return []
    found: list[tuple[int, Path]] = []
    for child in root.iterdir():
        if not child.is_dir() or is_temp(child):
            continue
        if not is_gptx_checkpoint(child):
            continue
        try:
            step = int(json.loads((child / META_FILE).read_text())["step"])
        except (OSError, ValueError, KeyError, TypeError):
            m = _STEP_RE.fullmatch(child.name)
            if not m:
                continue
            step = int(m.group(1))
        found.append((step, child))
    return sorted(found, key=lambda sp: (sp[0], sp[1].name))


def latest_checkpoint(model_dir: str | Path) -> Path | None:
    """The complete checkpoint with the highest step under `model_dir`, or None."""
    found = list_checkpoints(model_dir)
    return found[-1][1] if found else None
