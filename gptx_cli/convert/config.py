"""`gptx convert config`: HF config.json <-> ModelZoo `model` section; legacy <-> trainer layout.

- hf -> trainer / legacy: `gptx_cli.model.hf.model_config_from_hf`, written as a ModelZoo `model` section
  (trainer: `trainer.init.model`; legacy: top-level `model`).
- trainer / legacy -> hf: the config's ModelConfig through `hf_config_from_model_config` (muP configs
  cannot be expressed in HF; their checkpoints fold muP on export, see `convert.mup`).
- legacy -> trainer: `gptx_cli.config.legacy.convert_legacy` (ModelZoo's convert_legacy_params_to_trainer_params),
  written as `<stem>_v2.yaml` like ModelZoo.
- trainer -> legacy: `trainer_to_legacy`, the inverse of the same tables; keys the legacy layout
  cannot hold are reported.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from gptx_cli.config import load_run_spec
from gptx_cli.config.legacy import convert_legacy, is_legacy, trainer_to_legacy
from gptx_cli.config.load import load_yaml
from gptx_cli.errors import ConfigError, UsageError
from gptx_cli.fsutil import write_text

CONFIG_FORMATS = ("hf", "legacy", "trainer")


def _read_yaml(path: Path) -> dict[str, Any]:
    data = load_yaml(path).data
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def _default_output(src: Path, src_fmt: str, tgt_fmt: str) -> Path:
    stem = src.stem if src.name != "config.json" else src.parent.name or "config"
    if src_fmt == "legacy" and tgt_fmt == "trainer":
        return src.with_name(f"{stem}_v2.yaml")  # ModelZoo's convert_legacy naming
    if tgt_fmt == "hf":
        return src.with_name(f"{stem}_hf") / "config.json"
    return src.with_name(f"{stem}_{tgt_fmt}.yaml")


def _dump_yaml(data: dict[str, Any], header: str) -> str:
    return header + yaml.safe_dump(data, sort_keys=False, default_flow_style=False)


def convert_config(
    src: str | Path,
    *,
    src_fmt: str,
    tgt_fmt: str,
    output: str | Path | None = None,
    output_dir: str | Path | None = None,
    family: str | None = None,
    overwrite: bool = False,
) -> tuple[Path, list[str]]:
    """Convert the config at `src`; returns (written path, notes about dropped keys). An existing output
    file is replaced only with `overwrite` (--overwrite)."""
    source = Path(src)
    for flag, fmt in (("--src-fmt", src_fmt), ("--tgt-fmt", tgt_fmt)):
        if fmt not in CONFIG_FORMATS:
            raise UsageError(f"{flag} {fmt!r}: expected one of {', '.join(CONFIG_FORMATS)}")
    if src_fmt == tgt_fmt:
        raise UsageError(f"--src-fmt and --tgt-fmt are both {src_fmt}: nothing to convert")
    if source.is_dir() and src_fmt == "hf":
        source = source / "config.json"
    if not source.is_file():
        raise UsageError(f"{source}: no such file")
    out = Path(output) if output is not None else None
    if out is None:
        default = _default_output(source, src_fmt, tgt_fmt)
        out = Path(output_dir) / default.name if output_dir is not None else default
    if out.exists() and not overwrite:
        raise UsageError(
            f"{out} already exists", hint="pass --overwrite to replace it, or choose another --output"
        )
    notes: list[str] = []
    header = f"# Converted by `gptx convert config` from {source.name} ({src_fmt} -> {tgt_fmt}).\n"

    if src_fmt == "hf":
        from gptx_cli.checkpoint import hf_family_of, read_json
        from gptx_cli.model.hf import model_config_from_hf

        hf = read_json(source, "config.json")
        hf_family_of(hf, source)
        section = model_config_from_hf(hf).to_section()
        data = {"trainer": {"init": {"model": section}}} if tgt_fmt == "trainer" else {"model": section}
        write_text(out, _dump_yaml(data, header))
        return out, notes

    data = _read_yaml(source)
    if (src_fmt == "legacy") != is_legacy(data):
        actual = "legacy" if is_legacy(data) else "trainer"
        raise ConfigError(f"{source}: --src-fmt {src_fmt} but the file is in the {actual} layout")

    if tgt_fmt == "hf":
        from gptx_cli.model.hf import hf_config_from_model_config

        cfg = load_run_spec(source).model
        fam = family or cfg.name
        try:
            hf = hf_config_from_model_config(cfg, fam)  # type: ignore[arg-type]
        except ConfigError as err:
            raise ConfigError(f"{source}: {err.message}") from None
        write_text(out, json.dumps(hf, indent=2, sort_keys=True) + "\n")
        return out, notes

    if src_fmt == "legacy":  # -> trainer
        conv = convert_legacy(data)
        if conv.problems:
            path, message = conv.problems[0]
            where = ".".join(str(p) for p in path)
            raise ConfigError(f"{source}: {where}: {message}")
        write_text(out, _dump_yaml(conv.data, header))
        return out, notes

    legacy, notes = trainer_to_legacy(data)  # trainer -> legacy
    write_text(out, _dump_yaml(legacy, header))
    return out, notes
