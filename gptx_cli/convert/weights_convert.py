"""`gptx convert checkpoint`: Hugging Face GPT-J / GPT-NeoX <-> gptx checkpoints, one tensor at a time.

Memory: source tensors are read one at a time (positioned reads, no whole-file maps), each output
tensor is built from at most three of them by `gptx_cli.model.hf`'s adapters, and the writer holds
one output shard; peak RAM is about one shard plus the largest tensor, not the model.

Before a single tensor is read the source keys and shapes are checked against what the config
needs (shapes come from file headers), so a wrong family, an unmatched key or a wrong shape fails
fast with the key and the file named, and nothing is written.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from gptx_cli.checkpoint import (
    META_FILE,
    MergedSource,
    hf_family_of,
    locate,
    read_checkpoint_meta,
    read_json,
    read_lora_meta,
    save_checkpoint_dir,
)
from gptx_cli.checksum import verify_checkpoint
from gptx_cli.config import load_run_spec
from gptx_cli.config.spec import ModelConfig, trainer_config_for_model
from gptx_cli.convert.mup import fold_mup, needs_folding
from gptx_cli.errors import CheckpointError, ConfigError, UsageError
from gptx_cli.fsutil import atomic_dir
from gptx_cli.model.hf import (
    _IGNORED_HF_KEYS,
    hf_config_from_model_config,
    model_config_from_hf,
    to_gptx,
    to_hf,
)
from gptx_cli.model.transformer import parameter_shapes
from gptx_cli.weights import (
    ShardedSafetensorsWriter,
    TensorSource,
    dtype_name,
    open_tensors,
    parse_size,
    resolve_dtype,
    torch_dtype,
)

FORMATS = ("hf", "gptx")
FAMILIES = ("gptj", "gpt-neox")
_HF_ARCH = {"gptj": "GPTJForCausalLM", "gpt-neox": "GPTNeoXForCausalLM"}


@dataclasses.dataclass
class ConversionSummary:
    source: Path
    src_fmt: str
    output: Path
    tgt_fmt: str
    family: str
    num_tensors: int
    num_parameters: int
    num_bytes: int
    files: list[str]
    dtype: str
    dropped: list[str]
    mup_folded: bool
    seconds: float

    def lines(self) -> list[str]:
        out = [
            f"converted {self.source} ({self.src_fmt}) -> {self.output} ({self.tgt_fmt}), model {self.family}",
            f"  tensors: {self.num_tensors}, parameters: {self.num_parameters:,}, "
            f"{self.num_bytes / 1e6:,.1f} MB in {self.dtype}, {self.seconds:.1f} s",
            f"  files: {', '.join(self.files)}",
        ]
        if self.mup_folded:
            out.append("  muP multipliers folded into the weights (standard parametrisation)")
        if self.dropped:
            shown = ", ".join(self.dropped[:5]) + (
                f" and {len(self.dropped) - 5} more" if len(self.dropped) > 5 else ""
            )
            out.append(f"  dropped {len(self.dropped)} unmatched source tensor(s): {shown}")
        return out


# ---------------------------------------------------------------------------------------- detection


def locate_source(path: Path, src_fmt: str | None) -> tuple[Path, str]:
    """(the source: a model_dir's latest checkpoint, its format: 'gptx' or 'hf', or `src_fmt` as given)."""
    if not path.exists():
        raise UsageError(f"{path}: no such file or directory")
    try:
        directory, kind = locate(path)
    except CheckpointError as err:
        if src_fmt is None:
            raise CheckpointError(err.message, hint="pass --src-fmt and --config") from None
        return path, src_fmt  # a bare weights file or directory, described by --config
    return directory, src_fmt or ("hf" if kind == "hf" else "gptx")


def _check_family(requested: str | None, found: str, where: Path) -> str:
    if requested is not None and requested != found:
        raise CheckpointError(
            f"{where}: wrong model family: --model {requested} but the checkpoint is {found}"
        )
    return found


# ------------------------------------------------------------------------------------- key checking


def _source_shapes(src: TensorSource) -> dict[str, tuple[int, ...]]:
    return {k: src.shape(k) for k in src.keys()}


def expected_hf_shapes(cfg: ModelConfig, family: str) -> dict[str, tuple[int, ...]]:
    """HF tensor name -> shape for `cfg`, by running the adapter on meta tensors (no data)."""

    shapes = parameter_shapes(cfg)
    return {
        name: tuple(t.shape)
        for name, t in to_hf(cfg, list(shapes), lambda n: torch.empty(shapes[n], device="meta"), family)  # type: ignore[arg-type]
    }


def match_keys(
    src: TensorSource,
    source_shapes: dict[str, tuple[int, ...]],
    expected: dict[str, tuple[int, ...]],
    *,
    allowed_extra: set[str],
    drop_unmatched: bool,
    what: str,
) -> tuple[list[str], list[str]]:
    """(keys to convert, keys dropped). CheckpointError naming the key and its file for a missing key,
    an unmatched key (unless `drop_unmatched`) or a wrong shape."""

    missing = [k for k in expected if k not in source_shapes]
    if missing:
        more = f" ({len(missing) - 1} more missing)" if len(missing) > 1 else ""
        raise CheckpointError(f"{src.origin}: missing tensor {missing[0]!r} needed by the {what}{more}")
    unmatched = [k for k in source_shapes if k not in expected and k not in allowed_extra]
    unmatched = [k for k in unmatched if not _IGNORED_HF_KEYS.search(k)]  # HF non-persistent buffers
    if unmatched and not drop_unmatched:
        more = f" ({len(unmatched) - 1} more)" if len(unmatched) > 1 else ""
        raise CheckpointError(
            f"{src.file_of(unmatched[0])}: unmatched key {unmatched[0]!r}: not part of the {what}{more}",
            hint="check --model / the config, or pass --drop-unmatched-keys to skip such tensors",
        )
    for k, shape in expected.items():
        if tuple(source_shapes[k]) != tuple(shape):
            raise CheckpointError(
                f"{src.file_of(k)}: tensor {k!r} has shape {list(source_shapes[k])} "
                f"but the {what} needs {list(shape)}"
            )
    return [k for k in source_shapes if k in expected], unmatched


# ---------------------------------------------------------------------------------------- conversion


def _cast(
    items: Iterator[tuple[str, torch.Tensor]], dtype: torch.dtype | None
) -> Iterator[tuple[str, torch.Tensor]]:
    for name, t in items:
        yield name, (t.to(dtype) if dtype is not None and t.is_floating_point() else t)


def _with_progress(
    items: Iterator[tuple[str, Any]], total: int, label: str, enabled: bool
) -> Iterator[tuple[str, Any]]:
    if not enabled:
        yield from items
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    with Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
        console=console,
        disable=not console.is_terminal,
        transient=True,
    ) as bar:
        task = bar.add_task("", total=total)
        for name, t in items:
            bar.update(task, advance=1, description=name)
            yield name, t


def _check_output(output: Path) -> None:
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise UsageError(
            f"{output}: output exists and is not empty", hint="remove it or choose another --output-dir"
        )


def _default_output(src: Path, tgt_fmt: str) -> Path:
    base = src if src.is_dir() else src.parent
    return base.with_name(f"{base.name}_to_{tgt_fmt}")


def convert_checkpoint(
    src: str | Path,
    *,
    src_fmt: str | None = None,
    tgt_fmt: str | None = None,
    model: str | None = None,
    config: str | Path | None = None,
    output_dir: str | Path | None = None,
    dtype: str | None = None,
    shard_size: str | int = "5GB",
    drop_unmatched_keys: bool = False,
    progress: bool = True,
) -> ConversionSummary:
    """Convert `src` (HF model dir or gptx checkpoint) into `output_dir`; see the module docstring."""
    source, src_fmt = locate_source(Path(src), src_fmt)
    if src_fmt not in FORMATS:
        raise UsageError(f"--src-fmt {src_fmt!r}: expected one of {', '.join(FORMATS)}")
    tgt_fmt = tgt_fmt or ("gptx" if src_fmt == "hf" else "hf")
    if tgt_fmt not in FORMATS:
        raise UsageError(f"--tgt-fmt {tgt_fmt!r}: expected one of {', '.join(FORMATS)}")
    if tgt_fmt == src_fmt:
        raise UsageError(f"--src-fmt and --tgt-fmt are both {src_fmt}: nothing to convert")
    if model is not None and model not in FAMILIES:
        raise UsageError(f"--model {model!r}: expected one of {', '.join(FAMILIES)}")
    if dtype is not None:
        dtype = dtype_name(resolve_dtype(dtype))  # bf16 -> bfloat16; anything else named
    shard_bytes = parse_size(shard_size)
    output = Path(output_dir) if output_dir is not None else _default_output(source, tgt_fmt)
    start = time.perf_counter()
    if src_fmt == "hf":
        summary = _hf_to_gptx(
            source, model, config, output, dtype, shard_bytes, drop_unmatched_keys, progress
        )
    else:
        summary = _gptx_to_hf(
            source, model, config, output, dtype, shard_bytes, drop_unmatched_keys, progress
        )
    summary.seconds = time.perf_counter() - start
    return summary


def _hf_to_gptx(
    source: Path,
    model: str | None,
    config: str | Path | None,
    output: Path,
    dtype: str | None,
    shard_bytes: int,
    drop_unmatched: bool,
    progress: bool,
) -> ConversionSummary:

    base = source if source.is_dir() else source.parent
    config_path = Path(config) if config is not None else base / "config.json"
    hf_config = read_json(config_path, "config.json")
    family = _check_family(model, hf_family_of(hf_config, config_path), config_path)
    try:
        cfg = model_config_from_hf(hf_config)
    except ConfigError as err:
        raise CheckpointError(f"{config_path}: {err.message}") from None
    gen_path = base / "generation_config.json"
    gen_config = read_json(gen_path, "generation_config.json") if gen_path.is_file() else None

    src = open_tensors(source)
    shapes = _source_shapes(src)
    # transformers >= 5 may call the NeoX head lm_head.weight; published checkpoints say embed_out.weight.
    expected = expected_hf_shapes(cfg, family)
    allowed: set[str] = set()
    if "embed_out.weight" in expected and "lm_head.weight" in shapes and "embed_out.weight" not in shapes:
        expected["lm_head.weight"] = expected.pop("embed_out.weight")
    if cfg.share_embedding_weights:  # HF may still list the tied head
        allowed |= {"lm_head.weight", "embed_out.weight"}
    keys, dropped = match_keys(
        src,
        shapes,
        expected,
        allowed_extra=allowed,
        drop_unmatched=drop_unmatched,
        what=f"{family} model of {config_path}",
    )
    items = _cast(to_gptx(cfg, keys, src.get), torch_dtype(dtype))
    items = _with_progress(items, len(parameter_shapes(cfg)), "converting", progress)
    extra = {"source": {"format": "hf", "path": str(source), "family": family}, "hf_config": hf_config}
    if gen_config is not None:
        extra["hf_generation_config"] = gen_config
    _check_output(output)  # refuse a non-empty output before reading any tensor
    save_checkpoint_dir(
        output,
        items,
        cfg,
        step=0,
        config_yaml_dict=trainer_config_for_model(cfg),
        tokenizer=str(base / "tokenizer.json") if (base / "tokenizer.json").is_file() else None,
        extra=extra,
        shard_size_bytes=shard_bytes,
    )
    meta = read_checkpoint_meta(output)
    files = sorted(p.name for p in output.iterdir())
    num_bytes = sum(p.stat().st_size for p in output.glob("*.safetensors"))
    return ConversionSummary(
        source,
        "hf",
        output,
        "gptx",
        family,
        len(parameter_shapes(cfg)),
        int(meta["num_parameters"]),
        num_bytes,
        files,
        str(meta["dtype"]),
        dropped,
        False,
        0.0,
    )


def _gptx_model_config(source: Path, config: str | Path | None) -> tuple[ModelConfig, dict[str, Any]]:

    if config is not None:
        spec = load_run_spec(config)
        meta: dict[str, Any] = read_checkpoint_meta(source) if (source / META_FILE).is_file() else {}
        return spec.model, meta
    meta = read_checkpoint_meta(source)
    return ModelConfig.from_dict(meta["model"]), meta


def _gptx_to_hf(
    source: Path,
    model: str | None,
    config: str | Path | None,
    output: Path,
    dtype: str | None,
    shard_bytes: int,
    drop_unmatched: bool,
    progress: bool,
) -> ConversionSummary:
    cfg, meta = _gptx_model_config(source, config)
    if cfg.name not in FAMILIES:
        raise CheckpointError(f"{source}: model name {cfg.name!r} is neither gptj nor gpt-neox")
    family = _check_family(model, cfg.name, Path(config) if config is not None else source / "gptx.json")
    verify_checkpoint(source, meta)
    src = open_tensors(source)
    if read_lora_meta(source) is not None:  # a LoRA checkpoint: export base + adapters merged
        src = MergedSource(source, cfg)  # type: ignore[assignment]
    shapes = _source_shapes(src)
    keys, dropped = match_keys(
        src,
        shapes,
        parameter_shapes(cfg),
        allowed_extra=set(),
        drop_unmatched=drop_unmatched,
        what=f"{family} model of its config",
    )
    out_dtype = dtype or _dominant_dtype(src, keys)
    get: Callable[[str], torch.Tensor] = src.get
    folded = needs_folding(cfg)
    if folded:
        cfg, keys, get = fold_mup(cfg, keys, get)
    try:
        hf_config = hf_config_from_model_config(cfg, family, dtype=out_dtype)  # type: ignore[arg-type]
    except ConfigError as err:
        raise CheckpointError(f"{source}: cannot export to Hugging Face {family}: {err.message}") from None
    original = meta.get("hf_config")
    hf_config_source = None  # the original HF config.json when it is given back unchanged
    if isinstance(original, dict) and not folded and _same_model(model_config_from_hf, original, cfg):
        hf_config_source = original
        # Converted from HF and unchanged: give back its config.json (token ids, versions, key style).
        hf_config = dict(original)
        for key in ("dtype", "torch_dtype"):
            if key in hf_config or key == "dtype":
                hf_config[key] = out_dtype
    gen_config = meta.get("hf_generation_config")
    if not isinstance(gen_config, dict):
        gen_config = {"_from_model_config": True}
        gen_config.update({k: hf_config[k] for k in ("bos_token_id", "eos_token_id") if k in hf_config})

    _check_output(output)
    with atomic_dir(output) as tmp:
        items = _cast(to_hf(cfg, keys, get, family), torch_dtype(dtype))  # type: ignore[arg-type]
        items = _with_progress(items, len(expected_hf_shapes(cfg, family)), "converting", progress)
        with ShardedSafetensorsWriter(tmp, shard_bytes) as writer:
            writer.add_all(items)
        from gptx_cli.convert.hf_tokenizer import export_tokenizer

        eos_id, warning = export_tokenizer(tmp, source, meta, cfg.max_position_embeddings)
        if warning:
            print(f"warning: {warning}", file=sys.stderr)
        if (
            eos_id is not None and hf_config_source is None
        ):  # a gptx-made model: its tokenizer decides the ids
            for conf in (hf_config, gen_config):
                conf.update(bos_token_id=eos_id, eos_token_id=eos_id)
        (tmp / "config.json").write_text(json.dumps(hf_config, indent=2, sort_keys=True) + "\n")
        (tmp / "generation_config.json").write_text(json.dumps(gen_config, indent=2, sort_keys=True) + "\n")
    files = sorted(p.name for p in output.iterdir())
    return ConversionSummary(
        source,
        "gptx",
        output,
        "hf",
        family,
        writer.num_tensors,
        writer.num_params,
        writer.total_bytes,
        files,
        out_dtype,
        dropped,
        folded,
        0.0,
    )


def _same_model(
    from_hf: Callable[[dict[str, Any]], ModelConfig], hf_config: dict[str, Any], cfg: ModelConfig
) -> bool:
    try:
        return from_hf(hf_config) == cfg
    except (ConfigError, KeyError, TypeError, ValueError):
        return False


def _dominant_dtype(src: TensorSource, keys: list[str]) -> str:

    counts: Counter[str] = Counter()
    for k in keys:
        shape = src.shape(k)
        n = 1
        for d in shape:
            n *= d
        counts[dtype_name(src.dtype(k))] += n
    return counts.most_common(1)[0][0] if counts else "float32"


def print_summary(summary: ConversionSummary) -> None:
    sys.stdout.write("\n".join(summary.lines()) + "\n")
