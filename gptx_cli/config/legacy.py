"""The legacy flat layout (ModelZoo <= 2.3: train_input / eval_input / model / optimizer / runconfig).

`convert_legacy(params)` produces the trainer layout with the same mapping as ModelZoo's
`convert_legacy_params_to_trainer_params` (cerebras/modelzoo/trainer/utils.py):

    model.*                         -> trainer.init.model.*   (minus mixed_precision / fp16_type)
    model.mixed_precision           -> trainer.init.precision.enabled
    model.fp16_type                 -> trainer.init.precision.fp16_type
    optimizer.optimizer_type: X     -> trainer.init.optimizer: {X: <other optimizer keys>}
    optimizer.learning_rate (list)  -> trainer.init.schedulers: [{SequentialLR: {schedulers: [...]}}]
                                       (one item: that scheduler alone; `main_scheduler: chained`
                                       -> ChainedScheduler); `scheduler: Linear` -> LinearLR, ...
    optimizer.learning_rate (float) -> kept in the optimizer, plus schedulers: [{ConstantLR: ...}]
    optimizer.loss_scaling_factor, initial_loss_scale, steps_per_increase, min/max_loss_scale,
              max_gradient_norm, max_gradient_value, log_summaries -> trainer.init.precision.*
    optimizer.grad_accum_steps      -> trainer.init.loop.grad_accum_steps
    runconfig.max_steps, num_steps, eval_frequency, eval_steps, num_epochs, steps_per_epoch -> init.loop
    runconfig.checkpoint_steps      -> init.checkpoint.steps (and autoload_last_checkpoint, ...)
    runconfig.log_steps / logging   -> init.logging.log_steps / log_level
    runconfig.seed, model_dir       -> init.seed, init.model_dir
    runconfig.target_device         -> init.backend.backend_type (CSX cluster keys -> backend.cluster_config)
    runconfig.checkpoint_path       -> fit.ckpt_path, validate.ckpt_path, validate_all.ckpt_paths
    runconfig.max_checkpoints       -> init.checkpoint.keep_last_n (ModelZoo: KeepNCheckpoints callback)
    train_input                     -> trainer.fit.train_dataloader
    eval_input                      -> trainer.fit.val_dataloader, validate.val_dataloader,
                                       validate_all.val_dataloaders
    sparsity                        -> trainer.init.sparsity

Unknown top-level or runconfig keys are reported as problems (ModelZoo only warns; gptx treats
unknown keys as errors everywhere, like the trainer layout's `extra="forbid"`). Torch-free.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from gptx_cli.config.schemas import KeyPath, canonical_scheduler_name, did_you_mean, scheduler_names
from gptx_cli.errors import ConfigError

LEGACY_TOP_KEYS = ("train_input", "eval_input", "model", "optimizer", "runconfig", "sparsity", "wandb")

# optimizer.* keys that ModelZoo moves into the precision section.
_OPTIMIZER_TO_PRECISION = {
    "loss_scaling_factor": "loss_scaling_factor",
    "initial_loss_scale": "initial_loss_scale",
    "steps_per_increase": "steps_per_increase",
    "min_loss_scale": "min_loss_scale",
    "max_loss_scale": "max_loss_scale",
    "max_gradient_norm": "max_gradient_norm",
    "max_gradient_value": "max_gradient_value",
    "log_summaries": "log_loss_scale",
}

# runconfig.<key> -> trainer path (relative to trainer.init unless it starts with fit/validate).
_RUNCONFIG_MAP: dict[str, tuple[str, ...]] = {
    "model_dir": ("model_dir",),
    "seed": ("seed",),
    "target_device": ("backend", "backend_type"),
    "compile_dir": ("backend", "compile_dir"),
    "compile_only": ("backend", "compile_only"),
    "validate_only": ("backend", "validate_only"),
    "num_csx": ("backend", "cluster_config", "num_csx"),
    "num_wgt_servers": ("backend", "cluster_config", "max_wgt_servers"),
    "mgmt_address": ("backend", "cluster_config", "mgmt_address"),
    "mgmt_namespace": ("backend", "cluster_config", "mgmt_namespace"),
    "credentials_path": ("backend", "cluster_config", "credentials_path"),
    "mount_dirs": ("backend", "cluster_config", "mount_dirs"),
    "python_paths": ("backend", "cluster_config", "python_paths"),
    "num_workers_per_csx": ("backend", "cluster_config", "num_workers_per_csx"),
    "num_act_servers": ("backend", "cluster_config", "max_act_per_csx"),
    "job_labels": ("backend", "cluster_config", "job_labels"),
    "job_priority": ("backend", "cluster_config", "job_priority"),
    "job_time_sec": ("backend", "cluster_config", "job_time_sec"),
    "disable_version_check": ("backend", "cluster_config", "disable_version_check"),
    "enable_distributed": ("backend", "enable_distributed"),
    "main_process_id": ("backend", "main_process_id"),
    "dist_backend": ("backend", "dist_backend"),
    "init_method": ("backend", "init_method"),
    "sync_batchnorm": ("backend", "sync_batchnorm"),
    "precision_opt_level": ("precision", "precision_opt_level"),
    "num_steps": ("loop", "num_steps"),
    "max_steps": ("loop", "max_steps"),
    "num_epochs": ("loop", "num_epochs"),
    "steps_per_epoch": ("loop", "steps_per_epoch"),
    "eval_frequency": ("loop", "eval_frequency"),
    "eval_steps": ("loop", "eval_steps"),
    "checkpoint_steps": ("checkpoint", "steps"),
    "disable_strict_checkpoint_loading": ("checkpoint", "disable_strict_checkpoint_loading"),
    "autoload_last_checkpoint": ("checkpoint", "autoload_last_checkpoint"),
    "save_initial_checkpoint": ("checkpoint", "save_initial_checkpoint"),
    "max_checkpoints": ("checkpoint", "keep_last_n"),
    "log_steps": ("logging", "log_steps"),
    "logging": ("logging", "log_level"),
    "wsc_log_level": ("logging", "wsc_log_level"),
    "enable_act_frequency": ("logging", "enable_act_frequency"),
}
# runconfig keys ModelZoo turns into Cerebras-only callbacks or ignores; gptx accepts and ignores them.
IGNORED_RUNCONFIG_KEYS = frozenset(
    {
        "mode",
        "transfer_processes",
        "ini",
        "debug_args",
        "debug_args_path",
        "retrace_every_iteration",
        "lazy_initialization",
        "log_initialization",
        "drop_data",
        "fabric_type_blacklist",
        "compile_crd_memory_gi",
        "execute_crd_memory_gi",
        "wrk_memory_gi",
        "act_memory_gi",
        "cmd_memory_gi",
        "wgt_memory_gi",
        "chf_memory_gi",
        "log_input_summaries",
        "check_loss_values",
        "load_checkpoint_states",
        "experimental",
        "op_profiler_config",
        "dump_activations",
        "hf_cache_dir",
        "summary_dir",
        "legacy_event_dirs",
    }
)
RUNCONFIG_KEYS = frozenset(_RUNCONFIG_MAP) | IGNORED_RUNCONFIG_KEYS | {"checkpoint_path"}


def is_legacy(params: Any) -> bool:
    """ModelZoo's rule: a config without a top-level `trainer` key is in the legacy layout."""
    return isinstance(params, dict) and "trainer" not in params


@dataclass
class LegacyConversion:
    """The trainer-layout dict, where its keys came from, and problems found on the way."""

    data: dict[str, Any]
    path_map: list[tuple[KeyPath, KeyPath]] = field(default_factory=list)
    problems: list[tuple[KeyPath, str]] = field(default_factory=list)  # (legacy path, message)


def convert_legacy(params: dict[str, Any]) -> LegacyConversion:
    """Legacy flat params -> `{"trainer": {...}}`; the input is not modified."""
    params = copy.deepcopy(params)
    init: dict[str, Any] = {}
    trainer: dict[str, Any] = {"init": init}
    conv = LegacyConversion({"trainer": trainer})
    T: KeyPath = ("trainer",)
    I: KeyPath = ("trainer", "init")  # noqa: E741

    def put(section: dict[str, Any], keys: tuple[str, ...], value: Any) -> None:
        for k in keys[:-1]:
            section = section.setdefault(k, {})
        section[keys[-1]] = value

    for key in params:
        if key not in LEGACY_TOP_KEYS:
            conv.problems.append(((key,), f"unknown top-level key '{key}'"))

    # model (precision keys move out)
    model = params.get("model")
    if isinstance(model, dict):
        precision: dict[str, Any] = {}
        if "mixed_precision" in model:
            precision["enabled"] = model.pop("mixed_precision")
            conv.path_map.append((I + ("precision", "enabled"), ("model", "mixed_precision")))
        if "fp16_type" in model:
            precision["fp16_type"] = model.pop("fp16_type")
            conv.path_map.append((I + ("precision", "fp16_type"), ("model", "fp16_type")))
        if "lora_params" in model:  # ModelZoo: model.lora_params -> the Lora callback
            init["callbacks"] = [{"Lora": {"lora_params": model.pop("lora_params")}}]
            conv.path_map.append((I + ("callbacks", 0, "Lora", "lora_params"), ("model", "lora_params")))
        init["model"] = model
        conv.path_map.append((I + ("model",), ("model",)))
        if precision:
            init["precision"] = precision
    elif model is not None:
        init["model"] = model
        conv.path_map.append((I + ("model",), ("model",)))

    # optimizer
    optimizer = params.get("optimizer")
    if isinstance(optimizer, dict):
        _convert_optimizer(optimizer, init, conv)
    elif optimizer is not None:
        conv.problems.append((("optimizer",), "expected a mapping with optimizer_type"))

    # runconfig
    runconfig = params.get("runconfig") or {}
    ckpt_path = None
    if isinstance(runconfig, dict):
        for key, value in runconfig.items():
            if key in _RUNCONFIG_MAP:
                target = _RUNCONFIG_MAP[key]
                put(init, target, value)
                conv.path_map.append((I + target, ("runconfig", key)))
            elif key == "checkpoint_path":
                ckpt_path = value
            elif key not in IGNORED_RUNCONFIG_KEYS:
                conv.problems.append(((("runconfig", key)), _unknown("runconfig", key, RUNCONFIG_KEYS)))
    else:
        conv.problems.append((("runconfig",), "expected a mapping"))

    if "sparsity" in params:
        init["sparsity"] = params["sparsity"]
        conv.path_map.append((I + ("sparsity",), ("sparsity",)))

    # data
    if "train_input" in params:
        fit: dict[str, Any] = {"train_dataloader": params["train_input"]}
        conv.path_map.append((T + ("fit", "train_dataloader"), ("train_input",)))
        if "eval_input" in params:
            fit["val_dataloader"] = copy.deepcopy(params["eval_input"])
            conv.path_map.append((T + ("fit", "val_dataloader"), ("eval_input",)))
        if ckpt_path is not None:
            fit["ckpt_path"] = ckpt_path
            conv.path_map.append((T + ("fit", "ckpt_path"), ("runconfig", "checkpoint_path")))
        trainer["fit"] = fit
    if "eval_input" in params:
        trainer["validate"] = {"val_dataloader": copy.deepcopy(params["eval_input"])}
        trainer["validate_all"] = {"val_dataloaders": copy.deepcopy(params["eval_input"])}
        conv.path_map.append((T + ("validate", "val_dataloader"), ("eval_input",)))
        conv.path_map.append((T + ("validate_all", "val_dataloaders"), ("eval_input",)))
        if ckpt_path is not None:
            trainer["validate"]["ckpt_path"] = ckpt_path
            trainer["validate_all"]["ckpt_paths"] = ckpt_path
            conv.path_map.append((T + ("validate", "ckpt_path"), ("runconfig", "checkpoint_path")))
            conv.path_map.append((T + ("validate_all", "ckpt_paths"), ("runconfig", "checkpoint_path")))
    return conv


def _unknown(section: str, key: str, known: Any) -> str:
    return f"unknown key '{key}' in {section}{did_you_mean(key, known)}"


def _convert_optimizer(optimizer: dict[str, Any], init: dict[str, Any], conv: LegacyConversion) -> None:
    I: KeyPath = ("trainer", "init")  # noqa: E741
    opt_type = optimizer.pop("optimizer_type", None)
    if opt_type is None:
        conv.problems.append((("optimizer",), "legacy optimizer needs 'optimizer_type' (e.g. AdamW)"))
        opt_type = "AdamW"
    opt_type = str(opt_type)
    precision = init.setdefault("precision", {})
    for key, target in _OPTIMIZER_TO_PRECISION.items():
        if key in optimizer:
            precision[target] = optimizer.pop(key)
            conv.path_map.append((I + ("precision", target), ("optimizer", key)))
    if not precision:
        init.pop("precision")
    if "grad_accum_steps" in optimizer:
        init.setdefault("loop", {})["grad_accum_steps"] = optimizer.pop("grad_accum_steps")
        conv.path_map.append((I + ("loop", "grad_accum_steps"), ("optimizer", "grad_accum_steps")))

    lr = optimizer.get("learning_rate")
    adjust = optimizer.get("adjust_learning_rate")
    if isinstance(lr, (list, dict)):
        optimizer.pop("learning_rate")
        sched, sched_map = _convert_schedulers(lr, conv)
        if sched is not None:
            if adjust:
                sched = {"ScalePerParamLR": {"scheduler": sched}}
                sched_map = [(("ScalePerParamLR", "scheduler") + new, old) for new, old in sched_map]
            init["schedulers"] = [sched]
            for new, old in sched_map:
                conv.path_map.append((I + ("schedulers", 0) + new, ("optimizer", "learning_rate") + old))
    elif lr is not None:
        # A constant learning rate becomes an explicit ConstantLR (ModelZoo does the same).
        init["schedulers"] = [{"ConstantLR": {"learning_rate": lr}}]
        conv.path_map.append((I + ("schedulers", 0, "ConstantLR"), ("optimizer", "learning_rate")))
    init["optimizer"] = {opt_type: optimizer}
    conv.path_map.append((I + ("optimizer", opt_type), ("optimizer",)))
    conv.path_map.append((I + ("optimizer",), ("optimizer",)))


def _convert_schedulers(
    lr: list[Any] | dict[str, Any], conv: LegacyConversion
) -> tuple[dict[str, Any] | None, list[tuple[KeyPath, KeyPath]]]:
    """Legacy `learning_rate` list/dict -> one trainer scheduler dict, plus (new, old) path pairs."""
    items = lr if isinstance(lr, list) else [lr]
    children: list[dict[str, Any]] = []
    mains: set[str] = set()
    for i, item in enumerate(items):
        where: KeyPath = (i,) if isinstance(lr, list) else ()
        if not isinstance(item, dict) or "scheduler" not in item:
            conv.problems.append((where, "each learning_rate entry needs a 'scheduler' key"))
            return None, []
        item = dict(item)
        if (main := item.pop("main_scheduler", None)) is not None:
            mains.add(str(main))
        raw_name = item.pop("scheduler")
        name = canonical_scheduler_name(raw_name)
        if name is None:
            conv.problems.append(
                (
                    ("optimizer", "learning_rate") + where + ("scheduler",),
                    f"unknown scheduler '{raw_name}'{_suggest(raw_name)}",
                )
            )
            return None, []
        children.append({name: item})
    if len(mains) > 1:
        conv.problems.append(
            (("optimizer", "learning_rate"), f"conflicting main_scheduler values {sorted(mains)}")
        )
    chained = bool(mains) and next(iter(mains)).lower() in ("chained", "chainedlr", "chainedscheduler")
    key = "ChainedScheduler" if chained else "SequentialLR"
    if len(children) == 1 and key == "SequentialLR":
        name = next(iter(children[0]))
        return children[0], [((name,), (0,) if isinstance(lr, list) else ())]
    mapping: list[tuple[KeyPath, KeyPath]] = [
        ((key, "schedulers", i, next(iter(c))), (i,)) for i, c in enumerate(children)
    ]
    mapping.append(((key,), ()))
    return {key: {"schedulers": children}}, mapping


def _suggest(name: str) -> str:
    return did_you_mean(str(name), scheduler_names())


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
