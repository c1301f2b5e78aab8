"""What gptx does with every key the training schemas accept: acted on, checked, or a warning. Torch-free.

gptx never accepts a ModelZoo key silently. Each key of schemas/*.json is one of:

- acted on: a field of the typed RunSpec (config/spec.py), or listed in `ACTED` with the module that
  reads it;
- checked: accepted only where gptx's behaviour is ModelZoo's (`CHECKED`; a schema enum or a rule in
  config/validate.py refuses every other value with file:line:col);
- no effect: listed in `NO_EFFECT` with the reason; `validate-config` (and `train` at its start)
  reports it as a warning `file:line:col: warning: key.path: accepted for ModelZoo compatibility; has
  no effect in gptx: <why>`.

tests/config/test_every_key.py walks every key of every schema and fails on a key in none of these.
Sections are named by their schema location: `init`, `model`, `precision`, `loop`, `checkpoint`,
`logging`, `backend`, `data` (any data loader), `validate_all`, `legacy.runconfig`, `legacy`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from gptx_cli.config.legacy import IGNORED_RUNCONFIG_KEYS
from gptx_cli.config.load import dataloader_sections
from gptx_cli.config.schemas import KeyPath, did_you_mean

NO_EFFECT_PREFIX = "accepted for ModelZoo compatibility; has no effect in gptx"
_CEREBRAS = "a Cerebras (CSX) system setting"

NO_EFFECT: dict[tuple[str, str], str] = {
    (
        "init",
        "autorestart",
    ): "Cerebras restarts failed cluster jobs; gptx resumes with autoload_last_checkpoint",
    ("precision", "precision_opt_level"): "a Cerebras compiler setting",
    ("precision", "log_loss_scale"): "gptx logs loss_scale whenever dynamic loss scaling runs",
    ("checkpoint", "disable_strict_checkpoint_loading"): "gptx always loads checkpoints strictly",
    ("logging", "wsc_log_level"): _CEREBRAS,
    ("logging", "enable_act_frequency"): _CEREBRAS,
    ("backend", "compile_dir"): _CEREBRAS,
    ("backend", "compile_only"): _CEREBRAS,
    ("backend", "validate_only"): _CEREBRAS,
    ("backend", "cluster_config"): _CEREBRAS,
    ("backend", "enable_distributed"): "gptx runs distributed when launched with --nproc or torchrun",
    ("backend", "main_process_id"): "gptx's main process is rank 0",
    ("backend", "dist_backend"): "gptx uses nccl on GPUs and gloo on CPUs",
    ("backend", "init_method"): "gptx takes the rendezvous from torchrun's environment",
    ("backend", "sync_batchnorm"): "GPT-J / GPT-NeoX have no batch norm",
    ("model", "position_embedding_offset"): "learned position embeddings only; gptx uses rotary",
    ("model", "num_relative_attention_buckets"): "relative attention only; gptx uses rotary",
    ("model", "pad_rope"): "a Cerebras kernel layout switch",
    ("model", "boundary_casting"): "a Cerebras numerics switch",
    ("model", "compute_eval_metrics"): "gptx eval always computes loss, perplexity and accuracy",
    ("data", "shuffle_buffer"): "gptx shuffles the whole sample index (map-style), not through a buffer",
    ("data", "use_worker_cache"): _CEREBRAS,
    ("data", "pad_last"): "gptx drops (train) or keeps unpadded (eval) the last partial batch",
    ("data", "sort_files"): "gptx always reads the files in sorted order",
    ("data", "repeat"): "gptx training streams always repeat; eval reads one pass",
    (
        "data",
        "micro_batch_size",
    ): "gptx reads the micro-batch from backend.micro_batch_size or --micro-batch-size",
    ("validate_all", "ckpt_paths"): "gptx eval takes the checkpoint from --checkpoint-path",
    ("legacy", "wandb"): "use trainer.init.loggers: [WandbLogger: {...}] (the trainer layout) for W&B",
}
# Legacy runconfig keys the conversion drops (config/legacy.py IGNORED_RUNCONFIG_KEYS): Cerebras-only.
LEGACY_RUNCONFIG_NO_EFFECT = "a Cerebras run setting"

# Accepted at ModelZoo's value only (schema enum or a semantic rule refuses any other).
CHECKED: dict[tuple[str, str], str] = {
    ("init", "sparsity"): "validate.semantic_problems: sparsity is not supported",
    ("loop", "num_epochs"): "validate.semantic_problems: give max_steps",
    ("loop", "steps_per_epoch"): "validate.semantic_problems: give max_steps",
    ("model", "embedding_layer_norm"): "validate.MODELZOO_UNSUPPORTED",
    ("model", "attention_module"): "validate.MODELZOO_UNSUPPORTED",
    ("model", "attention_sliding_window_length"): "validate.MODELZOO_UNSUPPORTED",
    ("model", "pos_scaling_factor"): "validate.MODELZOO_UNSUPPORTED",
    ("model", "alibi_trainable_slopes"): "validate.MODELZOO_UNSUPPORTED",
    ("model", "extra_attention_params"): "validate._model_rules",
    ("model", "norm_type"): "schema enum: layernorm",
    ("data", "dataset_map_fn"): "validate._data_rules",
}

# Acted on outside the RunSpec dataclass fields: (section, key) -> the module that reads it.
ACTED: dict[tuple[str, str], str] = {
    ("init", "device"): "gptx_cli/config/build.py",
    ("init", "backend"): "gptx_cli/config/build.py",
    ("init", "model_dir"): "gptx_cli/config/build.py",
    ("init", "seed"): "gptx_cli/config/build.py",
    ("init", "model"): "gptx_cli/config/build.py",
    ("init", "optimizer"): "gptx_cli/config/build.py",
    ("init", "schedulers"): "gptx_cli/config/build.py",
    ("init", "precision"): "gptx_cli/config/build.py",
    ("init", "loop"): "gptx_cli/config/build.py",
    ("init", "checkpoint"): "gptx_cli/config/build.py",
    ("init", "logging"): "gptx_cli/config/build.py",
    ("init", "callbacks"): "gptx_cli/train/callbacks.py",
    ("init", "loggers"): "gptx_cli/train/callbacks.py",
    ("model", "mixed_precision"): "gptx_cli/config/build.py",
    ("model", "fp16_type"): "gptx_cli/config/build.py",
    ("validate_all", "val_dataloaders"): "gptx_cli/config/build.py",
    ("fit", "train_dataloader"): "gptx_cli/config/build.py",
    ("fit", "val_dataloader"): "gptx_cli/config/build.py",
    ("fit", "ckpt_path"): "gptx_cli/config/build.py",
    ("validate", "val_dataloader"): "gptx_cli/config/build.py",
    ("validate", "ckpt_path"): "gptx_cli/config/build.py",
    ("trainer", "init"): "gptx_cli/config/build.py",
    ("trainer", "fit"): "gptx_cli/config/build.py",
    ("trainer", "validate"): "gptx_cli/config/build.py",
    ("trainer", "validate_all"): "gptx_cli/config/build.py",
}


def no_effect_message(section: str, key: str) -> str:
    return f"{NO_EFFECT_PREFIX}: {NO_EFFECT[(section, key)]}"


def _sections(trainer: dict[str, Any]) -> Iterator[tuple[str, KeyPath, dict[str, Any]]]:
    init = (trainer.get("trainer") or {}).get("init")
    if not isinstance(init, dict):
        return
    base: KeyPath = ("trainer", "init")
    yield "init", base, init
    for name in ("model", "precision", "loop", "checkpoint", "logging", "backend"):
        body = init.get(name)
        if isinstance(body, dict):
            yield name, base + (name,), body
    for path, loader in dataloader_sections(trainer):
        yield "data", path, loader
    va = (trainer.get("trainer") or {}).get("validate_all")
    if isinstance(va, dict):
        yield "validate_all", ("trainer", "validate_all"), va


def no_effect_problems(trainer: dict[str, Any]) -> list[tuple[KeyPath, str]]:
    """(trainer-layout path, warning) for every key written that gptx accepts without acting on it."""
    out: list[tuple[KeyPath, str]] = []
    for section, path, body in _sections(trainer):
        for key, value in body.items():
            if (section, key) not in NO_EFFECT:
                continue
            if key == "cluster_config" and isinstance(value, dict) and value:
                # one warning per setting: a legacy config wrote each as its own runconfig key
                out += [(path + (key, sub), no_effect_message(section, key)) for sub in value]
            else:
                out.append((path + (key,), no_effect_message(section, key)))
    return out


def legacy_no_effect_problems(data: dict[str, Any]) -> list[tuple[KeyPath, str]]:
    """The same for keys of a legacy config that its conversion drops (paths as written)."""
    out: list[tuple[KeyPath, str]] = []
    if "wandb" in data:
        out.append((("wandb",), no_effect_message("legacy", "wandb")))
    runconfig = data.get("runconfig")
    if isinstance(runconfig, dict):
        for key in runconfig:
            if key in IGNORED_RUNCONFIG_KEYS:
                out.append((("runconfig", key), f"{NO_EFFECT_PREFIX}: {LEGACY_RUNCONFIG_NO_EFFECT}"))
    return out


# trainer.init.callbacks / loggers gptx runs (gptx_cli/train/callbacks.py), with the settings each takes.
CALLBACKS: dict[str, tuple[str, ...]] = {"ComputeNorm": (), "Lora": ("lora_params",)}  # Lora: model/lora.py
LOGGERS: dict[str, tuple[str, ...]] = {
    "TensorBoardLogger": ("summary_dir", "log_dir", "legacy_event_dirs"),
    "WandbLogger": ("project", "group", "run_id", "run_name", "job_type", "tags", "resume", "entity"),
}


def callback_problems(trainer: dict[str, Any]) -> list[tuple[KeyPath, str]]:
    """Errors for callbacks / loggers gptx does not run, or settings they do not take (did-you-mean)."""
    out: list[tuple[KeyPath, str]] = []
    init = (trainer.get("trainer") or {}).get("init")
    if not isinstance(init, dict):
        return out
    for section, known, what in (("callbacks", CALLBACKS, "callback"), ("loggers", LOGGERS, "logger")):
        entries = init.get(section)
        if not isinstance(entries, list):
            continue
        for i, entry in enumerate(entries):
            if not isinstance(entry, dict) or len(entry) != 1:
                continue  # the schema reports the shape
            ((name, params),) = entry.items()
            path: KeyPath = ("trainer", "init", section, i, name)
            if name not in known:
                out.append(
                    (
                        path,
                        f"unknown {what} '{name}'{did_you_mean(name, known)} (gptx runs {', '.join(known)})",
                    )
                )
                continue
            if params is not None and not isinstance(params, dict):
                out.append((path, f"expected a mapping of {name} settings, got {params!r}"))
                continue
            for key in params or {}:
                if key not in known[name]:
                    takes = ", ".join(known[name]) or "no settings"
                    out.append(
                        (
                            path + (key,),
                            f"{name} takes {takes}; unknown '{key}'{did_you_mean(key, known[name])}",
                        )
                    )
            if name == "WandbLogger" and (params or {}).get("resume", "auto") not in (
                "never",
                "allow",
                "auto",
                "must",
            ):
                out.append((path + ("resume",), "resume must be never, allow, auto or must"))
    return out
