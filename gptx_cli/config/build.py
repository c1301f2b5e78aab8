"""A trainer-layout dict (one trainer) -> the typed `RunSpec`.

The schema and the semantic rules (validate.py) run first, so the checks here are a safety net
that still reports `file:line:col: key.path: message` instead of a Python error. Torch-free.

Mapping (trainer layout -> RunSpec):
  init.model                        -> model (ModelConfig; keys left out take ModelConfig's defaults, ModelZoo's = those of
                                       schemas/model.schema.json, `gpt-neox` NeoX's, see below)
  init.optimizer {adamw: {...}}     -> optimizer = OptimizerSpec("AdamW", {...})
  init.schedulers [{Name: {...}}]   -> schedulers (SchedulerSpec; SequentialLR children from `schedulers`,
                                       its milestones filled from the children's total_iters when absent)
  init.precision                    -> precision (else model.mixed_precision / model.fp16_type)
  init.loop / checkpoint / logging  -> loop / checkpoint / logging
  init.backend (+ init.device)      -> backend (gptx extensions strategy, activation_checkpointing,
                                       compile, micro_batch_size)
  init.seed, init.model_dir         -> seed, model_dir (default ./model_dir)
  fit.train_dataloader              -> train_data
  fit.val_dataloader, else validate.val_dataloader, else validate_all.val_dataloaders[0] -> val_data
  fit.ckpt_path (else validate.ckpt_path) -> ckpt_path
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Union

from gptx_cli.config.load import ConfigSource
from gptx_cli.config.schemas import (
    KeyPath,
    canonical_optimizer_name,
    canonical_scheduler_name,
    did_you_mean,
    optimizer_names,
    scheduler_names,
)
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

# GPT-NeoX's architecture where the YAML does not say otherwise (HF GPTNeoXConfig: two LayerNorms,
# biases everywhere except the LM head, untied embeddings). `name: gptj` keeps ModelZoo's GPT-J defaults.
NEOX_MODEL_DEFAULTS: dict[str, Any] = {
    "use_untied_layer_norm": True,
    "use_projection_bias_in_attention": True,
    "use_ffn_bias_in_attention": True,
    "use_ffn_bias": True,
    "share_embedding_weights": False,
}

CBFLOAT16_NOTE = "fp16_type cbfloat16 is Cerebras-only: gptx runs it as bfloat16 (no loss-scaling needed)"


def _type_name(hint: Any) -> str:
    if hint is type(None):
        return "null"
    return {int: "an integer", float: "a number", bool: "a boolean", str: "a string", dict: "a mapping"}.get(
        hint, "a list" if typing.get_origin(hint) is list or hint is list else str(hint)
    )


def _coerce(src: ConfigSource, path: KeyPath, value: Any, hint: Any) -> Any:
    """Check `value` against a dataclass field type; ints are accepted where floats are expected."""
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for opt in options:
            if opt is type(None):
                continue
            try:
                return _coerce(src, path, value, opt)
            except Exception as err:  # noqa: BLE001 - try the next member of the union
                errors.append(err)
        names = " or ".join(_type_name(o) for o in options)
        raise src.error(path, f"expected {names}, got {value!r}")
    if origin is typing.Literal:
        if value in typing.get_args(hint):
            return value
        raise src.error(path, f"expected one of {list(typing.get_args(hint))}, got {value!r}")
    if hint is Any:
        return value
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is bool or hint is str:
        if isinstance(value, hint):
            return value
    elif origin is dict or hint is dict:
        if isinstance(value, dict):
            return value
    elif origin is list or hint is list:
        if isinstance(value, list):
            return value
    else:  # pragma: no cover - a spec field type this function does not know
        return value
    raise src.error(path, f"expected {_type_name(hint)}, got {value!r}")


def _fill(src: ConfigSource, cls: type, section: dict[str, Any], path: KeyPath, **preset: Any) -> Any:
    """Instantiate a spec dataclass from the keys of `section` that are its fields (checked)."""
    hints = typing.get_type_hints(cls)
    kwargs = dict(preset)
    for f in dataclasses.fields(cls):
        if f.name in section:
            kwargs[f.name] = _coerce(src, path + (f.name,), section[f.name], hints[f.name])
    return cls(**kwargs)


def _mapping(src: ConfigSource, parent: dict[str, Any], key: str, path: KeyPath) -> dict[str, Any]:
    value = parent.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise src.error(path + (key,), f"expected a mapping, got {value!r}")
    return value


def build_model_config(src: ConfigSource, model: dict[str, Any], path: KeyPath) -> ModelConfig:
    """A key the YAML leaves out takes ModelZoo's default (as ModelZoo would run the same file),
    or GPT-NeoX's for `name: gpt-neox`; `attention_dropout_rate: null` means residual_dropout_rate."""
    preset = {}  # the rest are ModelConfig's defaults: ModelZoo's (= schemas/model.schema.json's)
    if model.get("name") == "gpt-neox":
        preset = {k: v for k, v in NEOX_MODEL_DEFAULTS.items() if k not in model}
    cfg = _fill(
        src,
        ModelConfig,
        {k: v for k, v in model.items() if v is not None or k == "rotary_dim"},
        path,
        **preset,
    )
    if model.get("attention_dropout_rate") is None:
        cfg.attention_dropout_rate = cfg.residual_dropout_rate
    return cfg


def build_optimizer(src: ConfigSource, optimizer: Any, path: KeyPath) -> OptimizerSpec:
    if not isinstance(optimizer, dict) or len(optimizer) != 1:
        raise src.error(path, "expected exactly one optimizer, e.g. {AdamW: {weight_decay: 0.1}}")
    ((raw_name, params),) = optimizer.items()
    name = canonical_optimizer_name(raw_name)
    if name is None:
        raise src.error(
            path + (raw_name,), f"unknown optimizer '{raw_name}'{did_you_mean(raw_name, optimizer_names())}"
        )
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise src.error(path + (raw_name,), f"expected a mapping of optimizer settings, got {params!r}")
    return OptimizerSpec(name=name, params=dict(params))


def build_scheduler(src: ConfigSource, entry: Any, path: KeyPath) -> SchedulerSpec:
    if not isinstance(entry, dict) or len(entry) != 1:
        raise src.error(path, "expected one scheduler per list item, e.g. {LinearLR: {total_iters: 100}}")
    ((raw_name, params),) = entry.items()
    name = canonical_scheduler_name(raw_name)
    if name is None:
        raise src.error(
            path + (raw_name,), f"unknown scheduler '{raw_name}'{did_you_mean(raw_name, scheduler_names())}"
        )
    params = {} if params is None else params
    if not isinstance(params, dict):
        raise src.error(path + (raw_name,), f"expected a mapping of scheduler settings, got {params!r}")
    params = dict(params)
    here = path + (raw_name,)
    children: list[SchedulerSpec] = []
    if name == "SequentialLR":
        subs = params.pop("schedulers", None)
        if not isinstance(subs, list) or not subs:
            raise src.error(here + ("schedulers",), f"{name} needs a non-empty list of schedulers")
        children = [build_scheduler(src, s, here + ("schedulers", i)) for i, s in enumerate(subs)]
        if name == "SequentialLR" and "milestones" not in params:
            # ModelZoo: each child runs for its total_iters; the milestones are their running sums.
            total = 0
            milestones: list[int] = []
            for child in children[:-1]:
                iters = child.params.get("total_iters")
                if not isinstance(iters, int) or isinstance(iters, bool):
                    milestones = []
                    break
                total += iters
                milestones.append(total)
            if milestones or len(children) == 1:
                params["milestones"] = milestones
    return SchedulerSpec(name=name, params=params, children=children)


def build_data_spec(src: ConfigSource, loader: Any, path: KeyPath) -> DataSpec:
    if not isinstance(loader, dict):
        raise src.error(path, f"expected a data loader mapping, got {loader!r}")
    section = dict(loader)
    if isinstance(section.get("data_dir"), str):
        section["data_dir"] = [section["data_dir"]]
    spec = _fill(src, DataSpec, section, path)
    names = {f.name for f in dataclasses.fields(DataSpec)}
    spec.extra = {k: v for k, v in loader.items() if k not in names}
    for i, d in enumerate(spec.data_dir):
        if not isinstance(d, str):
            raise src.error(path + ("data_dir", i), f"expected a directory path, got {d!r}")
    return spec


def build_run_spec(src: ConfigSource) -> RunSpec:
    """The RunSpec for one trainer in `src.data` (`{"trainer": {...}}`)."""
    T: KeyPath = ("trainer",)
    trainer = src.data.get("trainer")
    if not isinstance(trainer, dict):
        raise src.error(T, "expected a mapping with init / fit / validate")
    init = _mapping(src, trainer, "init", T)
    I: KeyPath = T + ("init",)  # noqa: E741
    if "model" not in init:
        raise src.error(I, "missing required section 'model'")
    model_section = _mapping(src, init, "model", I)
    model = build_model_config(src, model_section, I + ("model",))

    optimizer = OptimizerSpec()
    if init.get("optimizer") is not None:
        optimizer = build_optimizer(src, init["optimizer"], I + ("optimizer",))

    schedulers: list[SchedulerSpec] = []
    raw_scheds = init.get("schedulers")
    if raw_scheds is not None:
        if isinstance(raw_scheds, dict):
            raw_scheds = [raw_scheds]  # ModelZoo accepts one scheduler without the list
            scheds_path = I + ("schedulers",)
            schedulers = [build_scheduler(src, raw_scheds[0], scheds_path)]
        elif isinstance(raw_scheds, list):
            schedulers = [build_scheduler(src, s, I + ("schedulers", i)) for i, s in enumerate(raw_scheds)]
        else:
            raise src.error(I + ("schedulers",), f"expected a list of schedulers, got {raw_scheds!r}")

    notes: list[str] = []
    if "precision" in init and init["precision"] is not None:
        precision = _fill(src, PrecisionSpec, _mapping(src, init, "precision", I), I + ("precision",))
    else:
        # Older trainer configs (and the published NeoX one) also carry the switch in the model section.
        precision = PrecisionSpec()
        if "mixed_precision" in model_section:
            precision.enabled = _coerce(
                src, I + ("model", "mixed_precision"), model_section["mixed_precision"], bool
            )
        if "fp16_type" in model_section:
            precision.fp16_type = _coerce(src, I + ("model", "fp16_type"), model_section["fp16_type"], str)
    if precision.fp16_type == "cbfloat16":
        notes.append(CBFLOAT16_NOTE)

    loop = _fill(src, LoopSpec, _mapping(src, init, "loop", I), I + ("loop",))
    checkpoint = _fill(src, CheckpointSpec, _mapping(src, init, "checkpoint", I), I + ("checkpoint",))
    logging = _fill(src, LoggingSpec, _mapping(src, init, "logging", I), I + ("logging",))
    backend_section = dict(_mapping(src, init, "backend", I))
    if "backend_type" not in backend_section and isinstance(init.get("device"), str):
        backend_section["backend_type"] = init["device"]
    backend = _fill(src, BackendSpec, backend_section, I + ("backend",))
    backend.backend_type = backend.backend_type.upper()

    seed = _coerce(src, I + ("seed",), init["seed"], int) if init.get("seed") is not None else None
    model_dir = "./model_dir"
    if init.get("model_dir") is not None:
        model_dir = _coerce(src, I + ("model_dir",), init["model_dir"], str)

    fit = _mapping(src, trainer, "fit", T)
    validate = _mapping(src, trainer, "validate", T)
    validate_all = _mapping(src, trainer, "validate_all", T)
    train_data = val_data = None
    if fit.get("train_dataloader") is not None:
        train_data = build_data_spec(src, fit["train_dataloader"], T + ("fit", "train_dataloader"))
    val_loader, val_path = _first_val_loader(fit, validate, validate_all)
    if val_loader is not None:
        val_data = build_data_spec(src, val_loader, val_path)
    ckpt_path = fit.get("ckpt_path", validate.get("ckpt_path"))
    if ckpt_path is not None:
        ckpt_path = _coerce(src, T + ("fit", "ckpt_path"), ckpt_path, str)

    return RunSpec(
        model=model,
        optimizer=optimizer,
        schedulers=schedulers,
        precision=precision,
        loop=loop,
        checkpoint=checkpoint,
        logging=logging,
        backend=backend,
        seed=seed,
        model_dir=model_dir,
        train_data=train_data,
        val_data=val_data,
        ckpt_path=ckpt_path,
        source=src.file,
        raw=src.data,
        notes=notes,
        callbacks=_named_entries(init.get("callbacks")),
        loggers=_named_entries(init.get("loggers")),
    )


def _named_entries(entries: Any) -> list[tuple[str, dict[str, Any]]]:
    """`[{Name: {...}}, ...]` (checked by config/compat.callback_problems) -> [(Name, params)]."""
    out: list[tuple[str, dict[str, Any]]] = []
    for entry in entries or []:
        ((name, params),) = entry.items()
        out.append((str(name), dict(params or {})))
    return out


def _first_val_loader(
    fit: dict[str, Any], validate: dict[str, Any], validate_all: dict[str, Any]
) -> tuple[Any, KeyPath]:
    """fit.val_dataloader, else validate.val_dataloader, else validate_all.val_dataloaders (first)."""
    T: KeyPath = ("trainer",)
    for section, key, name in (
        (fit, "val_dataloader", "fit"),
        (validate, "val_dataloader", "validate"),
        (validate_all, "val_dataloaders", "validate_all"),
    ):
        loader = section.get(key)
        if loader is None:
            continue
        if isinstance(loader, list):  # ModelZoo allows a list of val loaders: gptx uses the first
            if loader:
                return loader[0], T + (name, key, 0)
            continue
        return loader, T + (name, key)
    return None, T
