"""Models on disk: `resolve(path) -> ModelSource` is the one way to open a gptx checkpoint, a model_dir
(its latest checkpoint) or a Hugging Face GPT-J / GPT-NeoX directory; and the gptx checkpoint directory
(see docs/checkpoints.md):

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
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import yaml
from torch import Tensor

from gptx_cli.checksum import checksums_of, verify_checkpoint
from gptx_cli.config.lora import parse_lora_params
from gptx_cli.config.spec import ModelConfig, trainer_config_for_model
from gptx_cli.errors import CheckpointError, ConfigError, UsageError
from gptx_cli.fsutil import atomic_dir, is_temp
from gptx_cli.model.hf import hf_family, model_config_from_hf, to_gptx
from gptx_cli.model.init import init_model
from gptx_cli.model.lora import is_adapter, merged_tensors
from gptx_cli.model.transformer import Transformer
from gptx_cli.weights import ShardedSafetensorsWriter, TensorSource, dtype_name, open_tensors

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
    try:
        with atomic_dir(path) as tmp:
            items = (
                state_dict_or_items.items()
                if isinstance(state_dict_or_items, Mapping)
                else state_dict_or_items
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
                config_yaml_dict = trainer_config_for_model(model_cfg)
            (tmp / CONFIG_FILE).write_text(yaml.safe_dump(config_yaml_dict, sort_keys=False))
            if write_extra_files is not None:
                write_extra_files(tmp)
    except OSError as err:  # a full disk, a quota, a file-size limit, a read-only mount
        raise CheckpointError(
            f"{path}: cannot write the checkpoint: {err.strerror or err}",
            hint="free some space or choose another --model-dir; earlier checkpoints are intact",
        ) from None
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


def check_meta_if_present(path: str | Path) -> None:
    """A directory whose gptx.json exists but is malformed gets that named (CheckpointError), instead of
    being reported as 'not a checkpoint'."""
    if (Path(path) / META_FILE).is_file():
        read_checkpoint_meta(path)


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
    return ModelConfig.from_dict(read_checkpoint_meta(path)["model"])


def open_checkpoint_weights(path: str | Path) -> TensorSource:
    """The weights of a gptx checkpoint directory, for lazy reading (`.keys()`, `.get(name)`), after
    checking the weight files against the checksums gptx.json records (unless --no-verify)."""
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


# ------------------------------------------------------------------------------------ model sources

HF_CONFIG_FILE = "config.json"
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "encoder.json", "gpt2-encoder.json")


def read_json(path: Path, what: str) -> dict[str, Any]:
    """A JSON object file; UsageError when missing, CheckpointError naming the file when unparsable."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"{path}: {what} not found") from None
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{path}: cannot parse {what}: {err}") from err
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: {what} is not a JSON object")
    return data


def hf_family_of(config_json: dict[str, Any], config_path: Path) -> str:
    """'gptj' or 'gpt-neox' for a Hugging Face config.json; CheckpointError naming the file otherwise."""
    try:
        return hf_family(config_json)
    except ConfigError as err:
        raise CheckpointError(
            f"{config_path}: wrong model family: {err.message.split(': ', 1)[-1]}"
        ) from None


@dataclass(frozen=True)
class ModelSource:
    """A model on disk, as `resolve` found it."""

    kind: Literal["checkpoint", "model_dir", "hf"]  # a gptx checkpoint, a model_dir's latest one, an HF dir
    path: Path  # what was asked for
    directory: Path  # the directory holding the weights (a model_dir's latest checkpoint)
    step: int | None  # gptx checkpoints only
    config: ModelConfig
    meta: dict[str, Any]  # gptx.json, or the Hugging Face config.json
    tokenizer: str | None  # the recorded tokenizer (preset name or path), or None

    @property
    def is_gptx(self) -> bool:
        return self.kind != "hf"

    @contextmanager
    def open_weights(self) -> Iterator[Iterator[tuple[str, torch.Tensor]]]:
        """A lazy stream of (gptx name, tensor), read one tensor at a time: no caller holds the whole model."""
        if self.is_gptx and read_lora_meta(self.directory) is not None:  # base + adapters folded in
            with open_merged(self.directory, self.config) as merged:
                yield merged
            return
        opened = open_checkpoint_weights(self.directory) if self.is_gptx else open_tensors(self.directory)
        with opened as src:
            yield src.items() if self.is_gptx else to_gptx(self.config, src.keys(), src.get)

    def load_model(self, device: str | torch.device = "cpu", dtype: torch.dtype | None = None) -> Transformer:
        """The model in eval mode, in `dtype` (default: the stored dtype), on `device`. Built on the meta
        device and given the loaded tensors (no throwaway random init)."""
        with torch.device("meta"):
            model = Transformer(self.config)
        with self.open_weights() as tensors:
            state = dict(tensors)
        expected = model.state_dict()
        missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
        if missing or unexpected:
            what = f"missing tensor {missing[0]}" if missing else f"unexpected tensor {unexpected[0]}"
            raise CheckpointError(f"{self.directory}: {what} for this model config")
        for name, param in expected.items():
            if state[name].shape != param.shape:
                raise CheckpointError(
                    f"{self.directory}: tensor {name} has shape {list(state[name].shape)}, "
                    f"expected {list(param.shape)}"
                )
        model.load_state_dict(state, assign=True)
        if dtype is not None:
            model = model.to(dtype=dtype)
        return model.to(device).eval()


def locate(path: str | Path) -> tuple[Path, Literal["checkpoint", "model_dir", "hf"]]:
    """(the directory holding the weights, what `path` is), from marker files only; see `resolve`."""
    asked = Path(path)
    if not asked.exists():
        raise CheckpointError(f"{asked}: no such file or directory")
    if is_gptx_checkpoint(asked):
        return asked, "checkpoint"
    if (asked / HF_CONFIG_FILE).is_file():
        return asked, "hf"
    latest = latest_checkpoint(asked)
    if latest is None:
        check_meta_if_present(asked)  # a malformed gptx.json is named as such, not as missing
        raise CheckpointError(
            f"{asked}: not a model directory: neither a gptx checkpoint (gptx.json), a model_dir with "
            f"checkpoint_<step>/ nor a Hugging Face model directory (config.json)"
        )
    return latest, "model_dir"


def resolve(path: str | Path) -> ModelSource:
    """Open a gptx checkpoint dir, a model_dir of checkpoint_<step>/ dirs (its latest complete one) or a
    Hugging Face GPT-J / GPT-NeoX dir (config.json + safetensors / .bin, single or sharded)."""
    directory, kind = locate(path)
    tokenizer = None
    if kind != "hf":
        meta = read_checkpoint_meta(directory)
        config, step = ModelConfig.from_dict(meta["model"]), int(meta["step"])
        recorded = meta.get("tokenizer")
        if recorded:  # a copied tokenizer is recorded relative to the checkpoint dir; presets as they are
            tokenizer = str(directory / recorded) if (directory / recorded).is_file() else str(recorded)
    else:
        step = None
        meta = read_json(directory / HF_CONFIG_FILE, HF_CONFIG_FILE)
        hf_family_of(meta, directory / HF_CONFIG_FILE)
        try:
            config = model_config_from_hf(meta)
        except ConfigError as err:
            raise CheckpointError(f"{directory / HF_CONFIG_FILE}: {err.message}") from None
    if tokenizer is None and any((directory / name).is_file() for name in TOKENIZER_FILES):
        tokenizer = str(directory)
    return ModelSource(kind, Path(path), directory, step, config, meta, tokenizer)


# ------------------------------------------------------------------------------ LoRA checkpoints


def read_lora_meta(path: str | Path) -> dict[str, Any] | None:
    """The "lora" entry of a checkpoint's gptx.json (a LoRA run's checkpoint), or None."""
    f = Path(path) / "gptx.json"
    if not f.is_file():
        return None
    try:
        meta = json.loads(f.read_text())
    except (OSError, ValueError):
        return None
    lora = meta.get("lora") if isinstance(meta, dict) else None
    return lora if isinstance(lora, dict) else None


def base_of(path: str | Path, lora: dict[str, Any]) -> dict[str, Any]:
    """The recorded base of a LoRA checkpoint; a relative base path is relative to the checkpoint."""
    base = dict(lora.get("base") or {})
    if "path" in base and not Path(base["path"]).is_absolute():
        base["path"] = str((Path(path) / base["path"]).resolve())
    return base


def describe_base(path: Path) -> dict[str, Any]:
    """How a LoRA checkpoint names its base: the path and, for a gptx checkpoint, its weight checksums."""
    base: dict[str, Any] = {"path": str(Path(path).resolve())}
    if is_gptx_checkpoint(path) and read_checkpoint_meta(path).get("checksums"):
        base["checksums"] = read_checkpoint_meta(path)["checksums"]
    return base


def check_base(owner: Path, base: dict[str, Any]) -> None:
    """The base a LoRA checkpoint names must be there, with the weights it was trained on."""
    if "path" not in base:
        return
    where = Path(base["path"])
    if not where.exists():
        raise CheckpointError(
            f"{owner}: its LoRA base {where} does not exist",
            hint="the checkpoint holds only the adapters; restore the base model there "
            "(train with --lora-save-base for checkpoints that hold their base)",
        )
    if base.get("checksums") and is_gptx_checkpoint(where):
        if read_checkpoint_meta(where).get("checksums") != base["checksums"]:
            raise CheckpointError(
                f"{owner}: its LoRA base {where} is not the one the adapters were trained on "
                "(the weight checksums recorded in gptx.json differ)"
            )


@contextmanager
def open_base(path: Path, lora: dict[str, Any], cfg: ModelConfig) -> Iterator[Iterator[tuple[str, Tensor]]]:
    """The base tensors of a LoRA checkpoint (from its base checkpoint, its own file, or a seeded init)."""
    base = base_of(path, lora)
    if not lora.get("adapters_only", True):
        with open_checkpoint_weights(path) as src:
            yield ((n, t) for n, t in src.items() if not is_adapter(n))
        return
    if "path" in base:
        check_base(path, base)
        with resolve(base["path"]).open_weights() as tensors:
            yield tensors
        return
    if "init_seed" in base:
        model = init_model(cfg, seed=int(base["init_seed"]))
        yield iter(list(model.state_dict().items()))
        return
    raise CheckpointError(f"{path}: gptx.json lora.base names no base model")


@contextmanager
def open_merged(path: Path, cfg: ModelConfig) -> Iterator[Iterator[tuple[str, Tensor]]]:
    """A LoRA checkpoint as plain model tensors: base weights with the adapters folded in."""
    lora = read_lora_meta(path)
    assert lora is not None
    groups = parse_lora_params(lora["params"], f"{path}/gptx.json: lora.params")
    with open_checkpoint_weights(path) as src:
        adapters = {n: t for n, t in src.items() if is_adapter(n)}
    with open_base(path, lora, cfg) as base:
        yield merged_tensors(cfg, groups, base, adapters)


class MergedSource:
    """A LoRA checkpoint's merged tensors with the TensorSource interface `gptx convert` reads."""

    def __init__(self, path: Path, cfg: ModelConfig) -> None:
        with open_merged(path, cfg) as items:
            self.tensors = dict(items)
        self.origin = path

    def keys(self) -> list[str]:
        return list(self.tensors)

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.tensors[name].shape)

    def dtype(self, name: str) -> torch.dtype:
        return self.tensors[name].dtype

    def get(self, name: str) -> Tensor:
        return self.tensors[name]

    def file_of(self, name: str) -> Path:
        return self.origin

    def close(self) -> None:
        self.tensors.clear()
