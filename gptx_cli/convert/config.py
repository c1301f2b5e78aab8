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

import copy
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gptx_cli.errors import ConfigError, UsageError
from gptx_cli.fsutil import write_text

if TYPE_CHECKING:
    from gptx_cli.config.spec import ModelConfig

CONFIG_FORMATS = ("hf", "legacy", "trainer")


_MUP_KEYS = ("embeddings_scale", "scale_qk_dot_by_d", "scale_output_logits_by_d", "attention_logits_alpha")


def model_section(cfg: ModelConfig) -> dict[str, Any]:
    """The ModelZoo `model` section for a ModelConfig: None values (ModelZoo's default) are left out, and
    so are muP multipliers at their neutral defaults in a model that does not use muP."""
    from gptx_cli.config.spec import ModelConfig

    defaults = ModelConfig()
    section = {k: v for k, v in cfg.to_dict().items() if v is not None}
    if not cfg.uses_mup:
        for key in _MUP_KEYS:
            if section.get(key) == getattr(defaults, key):
                section.pop(key)
    return section


def trainer_config_for_model(cfg: ModelConfig) -> dict[str, Any]:
    """A trainer-layout config holding only the model (what a converted checkpoint's config.yaml holds)."""
    return {"trainer": {"init": {"model": model_section(cfg)}}}


# ------------------------------------------------------------------------------ trainer -> legacy


def _get_path(d: dict[str, Any], keys: tuple[str, ...]) -> tuple[bool, Any]:
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return False, None
        d = d[k]
    return True, d


def _pop_path(d: dict[str, Any], keys: tuple[str, ...]) -> None:
    parents = [d]
    for k in keys[:-1]:
        d = d[k]
        parents.append(d)
    d.pop(keys[-1])
    for parent, k in zip(reversed(parents[:-1]), reversed(keys[:-1]), strict=True):  # drop emptied sections
        if parent[k] == {}:
            parent.pop(k)


def _schedulers_to_learning_rate(sched: dict[str, Any], notes: list[str]) -> tuple[Any, bool]:
    """One trainer scheduler -> the legacy `learning_rate` list, and whether it was ScalePerParamLR-wrapped."""
    ((name, params),) = sched.items()
    if name == "ScalePerParamLR":
        inner, _ = _schedulers_to_learning_rate(params["scheduler"], notes)
        return inner, True
    if name in ("SequentialLR", "ChainedScheduler"):
        params = dict(params)
        children = params.pop("schedulers")
        for extra in params:
            notes.append(f"trainer.init.schedulers.0.{name}.{extra}: no legacy equivalent (dropped)")
        items = []
        for child in children:
            ((child_name, child_params),) = child.items()
            items.append({"scheduler": child_name, **child_params})
        if name == "ChainedScheduler" and items:
            items[0]["main_scheduler"] = "chained"
        return items, False
    return [{"scheduler": name, **params}], False


def trainer_to_legacy(data: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Trainer layout -> legacy flat layout (inverse of `convert_legacy`); returns (legacy, notes)."""
    from gptx_cli.config.legacy import _OPTIMIZER_TO_PRECISION, _RUNCONFIG_MAP

    trainer = data.get("trainer")
    if isinstance(trainer, list):
        if len(trainer) != 1:
            raise ConfigError(f"trainer: {len(trainer)} trainers; the legacy layout holds one")
        trainer = trainer[0].get("trainer", trainer[0])
    if not isinstance(trainer, dict) or not isinstance(trainer.get("init"), dict):
        raise ConfigError("trainer.init: missing; not a trainer-layout config")
    trainer = copy.deepcopy(trainer)
    init: dict[str, Any] = trainer["init"]
    notes: list[str] = []
    legacy: dict[str, Any] = {}
    fit = trainer.pop("fit", None) or {}
    validate = trainer.pop("validate", None) or {}
    trainer.pop("validate_all", None)  # derived from eval_input by convert_legacy
    if "train_dataloader" in fit:
        legacy["train_input"] = fit.pop("train_dataloader")
    fit_val, validate_val = fit.pop("val_dataloader", None), validate.pop("val_dataloader", None)
    eval_input = fit_val if fit_val is not None else validate_val
    if eval_input is not None:
        legacy["eval_input"] = (
            eval_input[0] if isinstance(eval_input, list) and len(eval_input) == 1 else eval_input
        )

    model = dict(init.pop("model", {}) or {})
    precision = dict(init.pop("precision", {}) or {})
    if "enabled" in precision:
        model["mixed_precision"] = precision.pop("enabled")
    if "fp16_type" in precision:
        model["fp16_type"] = precision.pop("fp16_type")
    legacy["model"] = model

    optimizer_section = init.pop("optimizer", None)
    optimizer: dict[str, Any] = {}
    if isinstance(optimizer_section, dict) and len(optimizer_section) == 1:
        ((opt_type, opt_params),) = optimizer_section.items()
        optimizer = {"optimizer_type": opt_type, **(opt_params or {})}
    elif optimizer_section is not None:
        raise ConfigError("trainer.init.optimizer: expected one optimizer mapping (e.g. {AdamW: {...}})")
    inverse_precision = {v: k for k, v in _OPTIMIZER_TO_PRECISION.items()}
    for key in list(precision):
        if key in inverse_precision:
            optimizer[inverse_precision[key]] = precision.pop(key)
    for key in precision:
        notes.append(f"trainer.init.precision.{key}: no legacy equivalent (dropped)")
    found, accum = _get_path(init, ("loop", "grad_accum_steps"))
    if found:
        optimizer["grad_accum_steps"] = accum
        _pop_path(init, ("loop", "grad_accum_steps"))
    schedulers = init.pop("schedulers", None)
    if schedulers:
        if len(schedulers) != 1:
            raise ConfigError("trainer.init.schedulers: the legacy layout holds one scheduler (list)")
        ((name, params),) = schedulers[0].items()
        if (
            name == "ConstantLR"
            and set(params) == {"learning_rate"}
            and optimizer.get("learning_rate") == params["learning_rate"]
        ):
            pass  # convert_legacy's rendering of a constant optimizer.learning_rate
        else:
            lr, adjust = _schedulers_to_learning_rate(schedulers[0], notes)
            optimizer["learning_rate"] = lr
            if adjust:
                optimizer.setdefault("adjust_learning_rate", True)
    if optimizer:
        legacy["optimizer"] = optimizer

    runconfig: dict[str, Any] = {}
    for legacy_key, path in _RUNCONFIG_MAP.items():
        found, value = _get_path(init, path)
        if found:
            runconfig[legacy_key] = value
            _pop_path(init, path)
    fit_ckpt, validate_ckpt = fit.pop("ckpt_path", None), validate.pop("ckpt_path", None)
    ckpt_path = fit_ckpt if fit_ckpt is not None else validate_ckpt
    if ckpt_path is not None:
        runconfig["checkpoint_path"] = ckpt_path
    if runconfig:
        legacy["runconfig"] = runconfig
    if "sparsity" in init:
        legacy["sparsity"] = init.pop("sparsity")
    for where, rest in (
        ("trainer.init", init),
        ("trainer.fit", fit),
        ("trainer.validate", validate),
        ("trainer", trainer),
    ):
        for key in rest:
            if where == "trainer" and key == "init":
                continue
            notes.append(f"{where}.{key}: no legacy equivalent (dropped)")
    # The canonical legacy order: ModelZoo files list inputs, model, optimizer, runconfig.
    order = ("train_input", "eval_input", "model", "optimizer", "runconfig", "sparsity")
    return {k: legacy[k] for k in order if k in legacy}, notes


# ------------------------------------------------------------------------------------- entry point


def _read_yaml(path: Path) -> dict[str, Any]:
    from gptx_cli.config.load import load_yaml

    data = load_yaml(path).data
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def _model_config_of_yaml(path: Path) -> ModelConfig:
    from gptx_cli.config import load_run_spec

    return load_run_spec(path).model


def _default_output(src: Path, src_fmt: str, tgt_fmt: str) -> Path:
    stem = src.stem if src.name != "config.json" else src.parent.name or "config"
    if src_fmt == "legacy" and tgt_fmt == "trainer":
        return src.with_name(f"{stem}_v2.yaml")  # ModelZoo's convert_legacy naming
    if tgt_fmt == "hf":
        return src.with_name(f"{stem}_hf") / "config.json"
    return src.with_name(f"{stem}_{tgt_fmt}.yaml")


def _dump_yaml(data: dict[str, Any], header: str) -> str:
    import yaml

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
    from gptx_cli.config.legacy import convert_legacy, is_legacy

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
        from gptx_cli.convert.checkpoint import hf_family_of, read_json
        from gptx_cli.model.hf import model_config_from_hf

        hf = read_json(source, "config.json")
        hf_family_of(hf, source)
        section = model_section(model_config_from_hf(hf))
        data = {"trainer": {"init": {"model": section}}} if tgt_fmt == "trainer" else {"model": section}
        write_text(out, _dump_yaml(data, header))
        return out, notes

    data = _read_yaml(source)
    if (src_fmt == "legacy") != is_legacy(data):
        actual = "legacy" if is_legacy(data) else "trainer"
        raise ConfigError(f"{source}: --src-fmt {src_fmt} but the file is in the {actual} layout")

    if tgt_fmt == "hf":
        from gptx_cli.model.hf import hf_config_from_model_config

        cfg = _model_config_of_yaml(source)
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
