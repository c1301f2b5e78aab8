"""Config validation: JSON Schema (schemas/*.json) for shape, then the semantic rules. Torch-free.

Every problem is a `Problem(file, line, col, path, message)`; `validate_file` collects all of them
(validate-config prints each), while `load_run_spec` raises the first as a ConfigError.

Order for one file:
1. YAML (duplicate keys and syntax errors stop here: nothing else can be trusted);
2. legacy files: `schemas/legacy.schema.json` on the file as written, then the in-memory conversion;
3. per trainer: `schemas/trainer.schema.json` on the trainer layout (legacy keys are reported at
   the place they were written), then the semantic rules below, then the RunSpec builder;
4. warnings: data directories that do not exist (errors with `strict_paths`), notes (cbfloat16).

The semantic rules (each with its own message) are in `semantic_problems`.
"""

from __future__ import annotations

import difflib
import functools
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeGuard

from gptx_cli.config.load import ConfigSource, KeyPath, LocatedConfigError, format_path
from gptx_cli.config.spec import RunSpec
from gptx_cli.errors import ConfigError

# gptx_cli/schemas links to the repo's top-level schemas/ (a wheel holds a copy): one source of truth.
SCHEMA_DIR = Path(os.environ.get("GPTX_SCHEMAS") or Path(__file__).resolve().parents[1] / "schemas")
SCHEMA_BASE = "https://gptx.invalid/schemas/"
SUPPORTED_MODELS = ("gptj", "gpt-neox")
# ModelZoo names gptx knows but cannot run: reported as "not supported" rather than "unknown".
MODELZOO_ONLY_OPTIMIZERS = (
    "Adafactor",
    "Adagrad",
    "Adadelta",
    "Adamax",
    "ASGD",
    "NAdam",
    "RAdam",
    "RMSprop",
    "Rprop",
    "Lamb",
)
MODELZOO_ONLY_SCHEDULERS = (
    "ChainedScheduler",
    "ScalePerParamLR",
    "CosineAnnealingWarmRestarts",
    "PiecewiseConstantLR",
    "LambdaLR",
    "MultiplicativeLR",
    "CyclicLR",
    "OneCycleLR",
)


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """`" (did you mean 'hidden_size'?)"` for the closest candidate, or "" when nothing is close."""
    match = difflib.get_close_matches(str(word), [str(c) for c in candidates], n=1, cutoff=0.6)
    return f" (did you mean '{match[0]}'?)" if match else ""


@dataclass
class Problem:
    """One finding, located where the user wrote the key (or in the override that set it)."""

    file: str
    line: int | None
    col: int | None
    path: str
    message: str
    severity: str = "error"  # or "warning"
    override: str | None = None

    def format(self) -> str:
        if self.line is None:
            where = f"{self.file}: override '{self.override}'" if self.override else self.file
        else:
            where = f"{self.file}:{self.line}:{self.col}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"

    def format_warning(self) -> str:
        """`file:line:col: warning: key.path: message` (validate-config's and train's text form)."""
        text = self.format()
        head, sep, rest = text.partition(f": {self.path}: ") if self.path else (text, "", "")
        return f"{head}: warning: {self.path}: {rest}" if sep else f"warning: {text}"

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"line": self.line, "col": self.col, "path": self.path, "message": self.message}
        if self.override:
            d["override"] = self.override
        return d

    @classmethod
    def from_error(cls, err: ConfigError, file: str) -> Problem:
        if isinstance(err, LocatedConfigError):
            return cls(err.file, err.line, err.col, err.path or "", err.detail, override=err.override)
        return cls(file, None, None, "", err.message)


@dataclass
class ValidationResult:
    """Everything validate-config reports for one file."""

    file: str
    errors: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    specs: list[RunSpec] = field(default_factory=list)  # one per trainer, when valid

    @property
    def valid(self) -> bool:
        return not self.errors

    def add(self, problem: Problem) -> None:
        # A key inside an anchor that is aliased elsewhere is one line in the file: report it once.
        bucket = self.errors if problem.severity == "error" else self.warnings

        def key(p: Problem) -> tuple[Any, ...]:
            return (p.line, p.col, p.message) if p.line is not None else (p.override, p.path, p.message)

        if all(key(p) != key(problem) for p in bucket):
            bucket.append(problem)


# --------------------------------------------------------------------------------------------- schemas


@functools.lru_cache(maxsize=1)
def load_schemas() -> dict[str, dict[str, Any]]:
    """All `schemas/*.schema.json`, by file name."""
    if not SCHEMA_DIR.is_dir():
        raise ConfigError(f"JSON schemas not found in {SCHEMA_DIR} (set GPTX_SCHEMAS)")
    return {p.name: json.loads(p.read_text()) for p in sorted(SCHEMA_DIR.glob("*.schema.json"))}


@functools.lru_cache(maxsize=4)
def _validator(name: str) -> Any:
    from jsonschema import Draft202012Validator
    from referencing import Registry, Resource

    schemas = load_schemas()
    registry: Registry = Registry().with_resources(
        (SCHEMA_BASE + n, Resource.from_contents(s)) for n, s in schemas.items()
    )
    return Draft202012Validator(schemas[name], registry=registry)


def data_processor_names() -> list[str]:
    """The data processors gptx accepts (the one list lives in schemas/data.schema.json)."""
    return list(load_schemas()["data.schema.json"]["$defs"]["data_processor"]["enum"])


def scheduler_names() -> list[str]:
    return [k for k in load_schemas()["schedulers.schema.json"]["$defs"] if k != "scheduler"]


def optimizer_names() -> list[str]:
    return list(load_schemas()["optimizer.schema.json"]["$defs"])


def _type_names(types: Any) -> str:
    names = {
        "integer": "an integer",
        "number": "a number",
        "string": "a string",
        "boolean": "true/false",
        "object": "a mapping",
        "array": "a list",
        "null": "null",
    }
    if isinstance(types, str):
        types = [types]
    return " or ".join(names.get(t, t) for t in types)


def _show(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _branch_fits(errors: list[Any], depth: int) -> bool:
    """An anyOf/oneOf branch fits when none of its errors is a type mismatch at the value itself."""
    return not any(len(e.absolute_path) == depth and e.validator in ("type", "enum", "$ref") for e in errors)


def _schema_messages(error: Any) -> Iterator[tuple[KeyPath, str]]:
    """(path, message) pairs for one jsonschema error, descending into anyOf/oneOf sensibly."""
    path: KeyPath = tuple(error.absolute_path)
    v = error.validator
    if v in ("anyOf", "oneOf") and error.context:
        branches: dict[Any, list[Any]] = {}
        for sub in error.context:
            branches.setdefault(sub.relative_schema_path[0], []).append(sub)
        fitting = [errs for errs in branches.values() if _branch_fits(errs, len(path))]
        if len(fitting) >= 1:
            # The value has the right kind for a branch: report that branch's own problems.
            best = min(fitting, key=len)
            for sub in best:
                yield from _schema_messages(sub)
            return
        kinds = []
        for sub in error.context:
            if sub.validator == "type" and len(sub.absolute_path) == len(path):
                kinds.append(_type_names(sub.validator_value))
            elif sub.validator == "enum" and len(sub.absolute_path) == len(path):
                kinds.append("one of " + ", ".join(map(str, sub.validator_value)))
        expected = " or ".join(dict.fromkeys(kinds)) or "a different value"
        yield path, f"expected {expected}, got {_show(error.instance)}"
        return
    if v == "additionalProperties":
        allowed = list(error.schema.get("properties", {}))
        extras = [k for k in error.instance if k not in allowed]
        single = error.schema.get("maxProperties") == 1
        for key in extras:
            if single:
                what = "optimizer" if path and path[-1] == "optimizer" else "scheduler"
                known = MODELZOO_ONLY_OPTIMIZERS if what == "optimizer" else MODELZOO_ONLY_SCHEDULERS
                if str(key).lower() in {k.lower() for k in known}:
                    supported = ", ".join(k for k in allowed if k != k.lower() or k.isupper())
                    yield path + (key,), f"{what} '{key}' is not supported by gptx (supported: {supported})"
                else:
                    yield path + (key,), f"unknown {what} '{key}'{did_you_mean(key, allowed)}"
            else:
                yield path + (key,), f"unknown key '{key}'{did_you_mean(key, allowed)}"
        return
    if v == "required":
        missing = [
            k for k in error.validator_value if isinstance(error.instance, dict) and k not in error.instance
        ]
        for key in missing:
            yield path, f"missing required key '{key}'"
        return
    if v == "type":
        yield path, f"expected {_type_names(error.validator_value)}, got {_show(error.instance)}"
    elif v == "enum":
        options = [str(o) for o in error.validator_value]
        hint = did_you_mean(str(error.instance), options)
        yield path, f"{_show(error.instance)} is not one of {', '.join(options)}{hint}"
    elif v == "minimum":
        yield path, f"must be >= {error.validator_value}, got {_show(error.instance)}"
    elif v == "exclusiveMinimum":
        yield path, f"must be > {error.validator_value}, got {_show(error.instance)}"
    elif v == "maximum":
        yield path, f"must be <= {error.validator_value}, got {_show(error.instance)}"
    elif v == "exclusiveMaximum":
        yield path, f"must be < {error.validator_value}, got {_show(error.instance)}"
    elif v == "minItems":
        yield path, f"needs at least {error.validator_value} item(s)"
    elif v == "maxItems":
        yield path, f"takes at most {error.validator_value} item(s), got {len(error.instance)}"
    elif v in ("minProperties", "maxProperties"):
        yield path, "expected exactly one entry, e.g. {AdamW: {...}} / {LinearLR: {...}}"
    elif v == "minLength":
        yield path, "must not be empty"
    elif v == "pattern":
        yield path, f"{_show(error.instance)} does not have the expected format"
    else:
        yield path, error.message


def schema_problems(name: str, data: Any) -> list[tuple[KeyPath, str]]:
    """(path, message) for every place `data` breaks schemas/<name>, in document order."""
    out: list[tuple[KeyPath, str]] = []
    for error in _validator(name).iter_errors(data):
        for item in _schema_messages(error):
            if item not in out:
                out.append(item)
    return out


# --------------------------------------------------------------------------------------------- semantic rules


def _get(d: Any, *keys: Any) -> Any:
    for k in keys:
        if isinstance(d, dict):
            d = d.get(k)
        elif isinstance(d, list) and isinstance(k, int) and 0 <= k < len(d):
            d = d[k]
        else:
            return None
    return d


def _is_int(v: Any) -> TypeGuard[int]:
    return isinstance(v, int) and not isinstance(v, bool)


def _num(v: Any) -> TypeGuard[float]:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


MODELZOO_UNSUPPORTED = {
    # key: (value that gptx supports, message when it differs)
    "embedding_layer_norm": (False, "embedding_layer_norm is not supported by gptx (GPT-J / NeoX have none)"),
    "attention_module": (
        "aiayn_attention",
        "attention_module {v!r} is not supported by gptx (aiayn_attention only)",
    ),
    "attention_sliding_window_length": (None, "sliding-window attention is not supported by gptx"),
    "pos_scaling_factor": (1.0, "pos_scaling_factor {v} is not supported by gptx (1.0 only)"),
    "alibi_trainable_slopes": (False, "alibi is not supported by gptx"),
}


def semantic_problems(trainer: dict[str, Any]) -> list[tuple[KeyPath, str, str]]:
    """(path, message, severity) for the rules beyond shape, on one trainer-layout dict `{trainer: ...}`."""
    from gptx_cli.config.flags import non_finite_problems

    out: list[tuple[KeyPath, str, str]] = list(non_finite_problems(trainer))
    T: KeyPath = ("trainer",)
    I: KeyPath = T + ("init",)  # noqa: E741
    M: KeyPath = I + ("model",)
    model = _get(trainer, "trainer", "init", "model")
    if isinstance(model, dict):
        out += _model_rules(model, M)
    init = _get(trainer, "trainer", "init") or {}
    precision = init.get("precision") if isinstance(init, dict) else None
    fp16_type, fp16_path = None, None
    if isinstance(precision, dict) and precision.get("fp16_type") is not None:
        fp16_type, fp16_path = precision.get("fp16_type"), I + ("precision", "fp16_type")
    elif isinstance(model, dict) and model.get("fp16_type") is not None:
        fp16_type, fp16_path = model.get("fp16_type"), M + ("fp16_type",)
    if fp16_type == "cbfloat16" and fp16_path is not None:
        lsf = precision.get("loss_scaling_factor") if isinstance(precision, dict) else None
        if lsf != "dynamic":
            out.append(
                (
                    fp16_path,
                    "fp16_type cbfloat16 requires precision.loss_scaling_factor: dynamic "
                    f"(got {_show(lsf) if lsf is not None else 'none'})",
                    "error",
                )
            )
    scheds = init.get("schedulers") if isinstance(init, dict) else None
    if isinstance(scheds, dict):
        scheds = [scheds]
    if isinstance(scheds, list):
        for i, s in enumerate(scheds):
            out += _scheduler_rules(s, I + ("schedulers", i))
    loop = init.get("loop") if isinstance(init, dict) else None
    loop = loop if isinstance(loop, dict) else {}
    for key in ("num_epochs", "steps_per_epoch"):
        if loop.get(key) is not None:
            out.append(
                (
                    I + ("loop", key),
                    f"{key} is not supported by gptx: give loop.max_steps or num_steps",
                    "error",
                )
            )
    fit = _get(trainer, "trainer", "fit")
    if isinstance(fit, dict) and loop.get("max_steps") is None and loop.get("num_steps") is None:
        out.append((T + ("fit",), "training needs loop.max_steps or loop.num_steps", "error"))
    sparsity = init.get("sparsity") if isinstance(init, dict) else None
    if sparsity:
        out.append((I + ("sparsity",), "sparsity is not supported by gptx", "error"))
    out += _data_rules(trainer, model if isinstance(model, dict) else {})
    out += _lora_rules(init if isinstance(init, dict) else {}, I)
    return out


def _lora_rules(init: dict[str, Any], I: KeyPath) -> list[tuple[KeyPath, str, str]]:  # noqa: E741
    """ModelZoo's Lora callback (gptx_cli.model.lora_config): its lora_params, at the callback's line."""
    from gptx_cli.model.lora_config import parse_lora_params

    cbs = init.get("callbacks")
    out: list[tuple[KeyPath, str, str]] = []
    for i, cb in enumerate(cbs if isinstance(cbs, list) else []):
        if not (isinstance(cb, dict) and "Lora" in cb):
            continue
        path = I + ("callbacks", i, "Lora")
        body = cb["Lora"]
        if not isinstance(body, dict) or set(body) != {"lora_params"}:
            out.append((path, "Lora takes one key, lora_params (a dict or a list of dicts)", "error"))
            continue
        try:
            parse_lora_params(body["lora_params"], "lora_params")
        except ConfigError as err:
            out.append((path + ("lora_params",), err.message, "error"))
    return out


def _model_rules(model: dict[str, Any], M: KeyPath) -> list[tuple[KeyPath, str, str]]:
    out: list[tuple[KeyPath, str, str]] = []
    name = model.get("name", "gptj")
    if isinstance(name, str) and name not in SUPPORTED_MODELS:
        out.append(
            (
                M + ("name",),
                f"model '{name}' is not supported by gptx (supported: {', '.join(SUPPORTED_MODELS)})",
                "error",
            )
        )
    pet = model.get("position_embedding_type", "rotary")
    if "position_embedding_type" in model and pet != "rotary":
        out.append(
            (
                M + ("position_embedding_type",),
                f"position_embedding_type {_show(pet)} is not supported for GPT-J / GPT-NeoX (use rotary)",
                "error",
            )
        )
    for key, (ok, message) in MODELZOO_UNSUPPORTED.items():
        if key in model and model[key] != ok:
            out.append((M + (key,), message.format(v=model[key]), "error"))
    if model.get("extra_attention_params"):
        out.append(
            (
                M + ("extra_attention_params",),
                "extra_attention_params (MQA/GQA) is not supported by gptx",
                "error",
            )
        )
    hidden = model.get("hidden_size", 768)
    heads = model.get("num_heads", 12)
    head_dim = None
    if _is_int(hidden) and _is_int(heads) and heads > 0:
        if hidden % heads:
            out.append(
                (
                    M + ("num_heads",),
                    f"hidden_size {hidden} is not divisible by num_heads {heads}",
                    "error",
                )
            )
        else:
            head_dim = hidden // heads
    rotary_dim = model.get("rotary_dim")
    if _is_int(rotary_dim):
        if rotary_dim % 2:
            out.append((M + ("rotary_dim",), f"rotary_dim must be even, got {rotary_dim}", "error"))
        if head_dim is not None and rotary_dim > head_dim:
            out.append(
                (
                    M + ("rotary_dim",),
                    f"rotary_dim {rotary_dim} is larger than the head dimension {head_dim} "
                    f"(hidden_size {hidden} / num_heads {heads})",
                    "error",
                )
            )
    elif rotary_dim is None and head_dim is not None and int(head_dim * 0.25) % 2:
        out.append(
            (
                M + ("hidden_size",),
                f"the default rotary_dim int(head_dim * 0.25) = {int(head_dim * 0.25)} is odd: set rotary_dim",
                "error",
            )
        )
    has_h = model.get("mup_base_hidden_size") is not None
    has_f = model.get("mup_base_filter_size") is not None
    if has_h != has_f:
        missing = "mup_base_filter_size" if has_h else "mup_base_hidden_size"
        present = "mup_base_hidden_size" if has_h else "mup_base_filter_size"
        out.append(
            (M + (present,), f"muP needs both base sizes: {present} is set but {missing} is not", "error")
        )
    for key in (
        "initializer",
        "embedding_initializer",
        "output_layer_initializer",
        "ffn_initializer",
        "ffn_output_initializer",
    ):
        init = model.get(key)
        if isinstance(init, dict) and init.get("name") == "truncated_normal":
            a, b = init.get("a"), init.get("b")
            if _num(a) and _num(b) and a >= b:
                out.append((M + (key, "a"), f"truncated_normal needs a < b, got a={a}, b={b}", "error"))
    if model.get("loss_scaling", "num_tokens") == "num_tokens" and _num(model.get("loss_weight")):
        if model["loss_weight"] != 1.0:
            out.append(
                (
                    M + ("loss_weight",),
                    f"loss_weight {model['loss_weight']} is ignored with loss_scaling: num_tokens "
                    "(ModelZoo resets it to 1.0)",
                    "warning",
                )
            )
    return out


def _scheduler_rules(entry: Any, path: KeyPath) -> list[tuple[KeyPath, str, str]]:
    out: list[tuple[KeyPath, str, str]] = []
    if not isinstance(entry, dict) or len(entry) != 1:
        return out
    ((name, params),) = entry.items()
    if not isinstance(params, dict):
        return out
    here = path + (name,)
    children = params.get("schedulers")
    if name != "SequentialLR" or not isinstance(children, list):
        return out
    for i, c in enumerate(children):
        out += _scheduler_rules(c, here + ("schedulers", i))
    lengths = [
        _get(next(iter(c.values())), "total_iters") if isinstance(c, dict) and len(c) == 1 else None
        for c in children
    ]
    milestones = params.get("milestones")
    if milestones is None:
        for i, n in enumerate(lengths[:-1]):
            if not _is_int(n):
                out.append(
                    (
                        here + ("schedulers", i),
                        "SequentialLR without milestones needs total_iters on every scheduler but the last",
                        "error",
                    )
                )
        return out
    if not isinstance(milestones, list) or not all(_is_int(m) for m in milestones):
        return out
    if len(milestones) != len(children) - 1:
        out.append(
            (
                here + ("milestones",),
                f"SequentialLR with {len(children)} schedulers needs {len(children) - 1} milestone(s), "
                f"got {len(milestones)}",
                "error",
            )
        )
    elif any(b <= a for a, b in zip(milestones, milestones[1:], strict=False)):
        out.append((here + ("milestones",), f"milestones must increase strictly, got {milestones}", "error"))
    else:
        start = 0
        for i, (m, n) in enumerate(zip(milestones, lengths, strict=False)):
            if _is_int(n) and m - start > n:
                out.append(
                    (
                        here + ("milestones",),
                        f"milestone {m} leaves scheduler {i} running {m - start} steps, past its total_iters {n}",
                        "warning",
                    )
                )
            start = m
    return out


def _loaders(trainer: dict[str, Any]) -> Iterator[tuple[KeyPath, dict[str, Any]]]:
    T: KeyPath = ("trainer",)
    for section, key in (
        ("fit", "train_dataloader"),
        ("fit", "val_dataloader"),
        ("validate", "val_dataloader"),
        ("validate_all", "val_dataloaders"),
    ):
        value = _get(trainer, "trainer", section, key)
        if isinstance(value, dict):
            yield T + (section, key), value
        elif isinstance(value, list):
            for i, v in enumerate(value):
                if isinstance(v, dict):
                    yield T + (section, key, i), v


def _data_rules(trainer: dict[str, Any], model: dict[str, Any]) -> list[tuple[KeyPath, str, str]]:
    out: list[tuple[KeyPath, str, str]] = []
    vocab = model.get("vocab_size", 50257)
    mpe = model.get("max_position_embeddings", 1024)
    mbs = _get(trainer, "trainer", "init", "backend", "micro_batch_size")
    accum = _get(trainer, "trainer", "init", "loop", "grad_accum_steps")
    for path, loader in _loaders(trainer):
        if _is_int(loader.get("vocab_size")) and _is_int(vocab) and loader["vocab_size"] != vocab:
            out.append(
                (
                    path + ("vocab_size",),
                    f"vocab_size {loader['vocab_size']} differs from model.vocab_size {vocab}",
                    "error",
                )
            )
        msl = loader.get("max_sequence_length")
        if _is_int(msl) and _is_int(mpe) and msl > mpe:
            out.append(
                (
                    path + ("max_sequence_length",),
                    f"max_sequence_length {msl} exceeds model.max_position_embeddings {mpe}",
                    "error",
                )
            )
        if loader.get("dataset_map_fn") is not None:
            out.append((path + ("dataset_map_fn",), "dataset_map_fn is not supported by gptx", "error"))
        if loader.get("data_dir") is None and not loader.get("mixture"):
            out.append((path, "needs data_dir (or mixture)", "error"))
        if loader.get("data_dir") is not None and loader.get("mixture"):
            out.append((path + ("mixture",), "give either data_dir or mixture, not both", "error"))
        batch = loader.get("batch_size")
        if path[1:3] == ("fit", "train_dataloader") and _is_int(batch):
            if _is_int(mbs) and batch % mbs:
                out.append(
                    (
                        path + ("batch_size",),
                        f"batch_size {batch} is not a multiple of backend.micro_batch_size {mbs}",
                        "error",
                    )
                )
            if _is_int(accum) and accum > 1 and batch % accum:
                out.append(
                    (
                        path + ("batch_size",),
                        f"batch_size {batch} is not a multiple of loop.grad_accum_steps {accum}",
                        "error",
                    )
                )
    return out


def data_dir_problems(trainer: dict[str, Any], base: Path | None = None) -> list[tuple[KeyPath, str]]:
    """(path, message) for every data directory that does not exist (relative to `base` or the cwd)."""
    out: list[tuple[KeyPath, str]] = []
    base = base or Path.cwd()
    for path, loader in _loaders(trainer):
        entries: list[tuple[KeyPath, Any]] = []
        dd = loader.get("data_dir")
        if isinstance(dd, str):
            entries.append((path + ("data_dir",), dd))
        elif isinstance(dd, list):
            entries += [(path + ("data_dir", i), d) for i, d in enumerate(dd)]
        for j, comp in enumerate(loader.get("mixture") or []):
            cdd = comp.get("data_dir") if isinstance(comp, dict) else None
            if isinstance(cdd, str):
                entries.append((path + ("mixture", j, "data_dir"), cdd))
            elif isinstance(cdd, list):
                entries += [(path + ("mixture", j, "data_dir", i), d) for i, d in enumerate(cdd)]
        missing = [(p, d) for p, d in entries if isinstance(d, str) and not (base / d).is_dir()]
        if len(missing) == 1:
            out.append((missing[0][0], f"data directory {missing[0][1]} does not exist"))
        elif missing:
            # One line per loader, at the first missing entry: ten shards of one dataset are one problem.
            shown = ", ".join(d for _, d in missing[:2]) + (", ..." if len(missing) > 2 else "")
            out.append(
                (missing[0][0], f"{len(missing)} of {len(entries)} data directories do not exist ({shown})")
            )
    return out


# --------------------------------------------------------------------------------------------- drivers


def _add(result: ValidationResult, source: ConfigSource, path: KeyPath, message: str, severity: str) -> None:
    shown, pos, override = source.locate(path)
    line, col = pos if pos is not None else (None, None)
    result.add(Problem(source.file, line, col, shown, message, severity, override))


def validate_source(
    source: ConfigSource,
    *,
    check_paths: bool = False,
    strict_paths: bool = False,
    result: ValidationResult | None = None,
) -> ValidationResult:
    """Schema + semantic rules + RunSpec for one trainer. Data directories are checked with `check_paths`."""
    from gptx_cli.config.build import build_run_spec

    result = result or ValidationResult(source.file)
    before = len(result.errors)
    for path, message in source.conversion_problems:
        shown = format_path(path)
        if all(p.path != shown for p in result.errors):  # the legacy schema may have said it already
            line, col = source.doc.where(path)
            result.add(Problem(source.file, line, col, shown, message))
    for path, message in schema_problems("trainer.schema.json", source.data):
        _add(result, source, path, message, "error")
    if len(result.errors) == before:
        # The rules assume the shape is right; with shape errors they would only add noise.
        for path, message, severity in semantic_problems(source.data):
            _add(result, source, path, message, severity)
        from gptx_cli.config.compat import callback_problems

        for path, message in callback_problems(source.data):
            _add(result, source, path, message, "error")
    from gptx_cli.config.compat import no_effect_problems

    for path, message in no_effect_problems(source.data):  # never silent: config/compat.py
        _add(result, source, path, message, "warning")
    if check_paths:
        for path, message in data_dir_problems(source.data):
            _add(result, source, path, message, "error" if strict_paths else "warning")
    if len(result.errors) == before:
        try:
            spec = build_run_spec(source)
        except ConfigError as err:
            result.add(Problem.from_error(err, source.file))
        else:
            result.specs.append(spec)
            for note in spec.notes:
                if note not in result.notes:
                    result.notes.append(note)
    return result


def validate_file(
    path: str | Path, overrides: Iterable[str] = (), *, check_paths: bool = True, strict_paths: bool = False
) -> ValidationResult:
    """Validate every trainer in a config file. Unreadable files raise UsageError (exit 2)."""
    from gptx_cli.config.load import apply_overrides, load_yaml, trainer_sources

    result = ValidationResult(str(path))
    try:
        doc = load_yaml(path)
        sources = trainer_sources(doc, strict=False)
    except LocatedConfigError as err:
        result.add(Problem.from_error(err, str(path)))
        return result
    if isinstance(doc.data, dict) and "trainer" not in doc.data:
        legacy = doc.data
        if isinstance(legacy.get("model"), dict) and "lora_params" in legacy["model"]:
            # model.lora_params becomes the Lora callback (legacy.convert_legacy), checked there
            legacy = {**legacy, "model": {k: v for k, v in legacy["model"].items() if k != "lora_params"}}
        for p, message in schema_problems("legacy.schema.json", legacy):
            line, col = doc.where(p)
            result.add(Problem(doc.file, line, col, format_path(p), message))
        from gptx_cli.config.compat import legacy_no_effect_problems

        for p, message in legacy_no_effect_problems(doc.data):
            line, col = doc.where(p)
            result.add(Problem(doc.file, line, col, format_path(p), message, "warning"))
    for source in sources:
        try:
            apply_overrides(source, overrides)
        except ConfigError as err:
            result.add(Problem.from_error(err, str(path)))
            continue
        validate_source(source, check_paths=check_paths, strict_paths=strict_paths, result=result)
    return result


# --------------------------------------------------------------------------------------------- reports


@dataclass
class FileReport:
    """One file's outcome for validate-config: a ValidationResult, or why the file could not be read."""

    file: str
    result: ValidationResult | None = None
    unreadable: str | None = None  # the UsageError message (exit 2)
    summaries: list[dict[str, Any]] = field(default_factory=list)


def default_config_paths(root: Path | None = None) -> list[Path]:
    """Every `*.yaml` under ./configs (what `gptx validate-config` checks without arguments)."""
    from gptx_cli.errors import UsageError

    configs = root / "configs" if root is not None else Path("configs")
    paths = sorted(configs.glob("*.yaml"))
    if not paths:
        raise UsageError(f"no config given and no *.yaml in {configs}")
    return paths


def validate_paths(
    paths: Iterable[str | Path],
    overrides: Iterable[str] = (),
    *,
    strict_paths: bool = False,
    summary: bool = False,
) -> list[FileReport]:
    """validate-config's work: every file, with summaries (parameter counts etc.) on request."""
    from gptx_cli.errors import UsageError

    overrides = list(overrides)
    reports = []
    for path in paths:
        report = FileReport(str(path))
        try:
            report.result = validate_file(path, overrides, strict_paths=strict_paths)
        except UsageError as err:
            report.unreadable = err.message
        else:
            if summary and report.result.valid:
                from gptx_cli.model.counts import run_summary

                report.summaries = [run_summary(spec) for spec in report.result.specs]
        reports.append(report)
    return reports


def exit_code(reports: list[FileReport]) -> int:
    """0 all valid, 1 any invalid, 2 any unreadable."""
    if any(r.unreadable for r in reports):
        return 2
    return 0 if all(r.result is not None and r.result.valid for r in reports) else 1


def _gib(n: int) -> str:
    return f"{n / 2**30:,.2f} GiB"


def render_text(reports: list[FileReport]) -> tuple[str, str]:
    """(stdout, stderr) text: problems as `file:line:col: key.path: message`, then a summary line."""
    out: list[str] = []
    err: list[str] = []
    n_err = n_warn = 0
    for r in reports:
        if r.unreadable:
            err.append(f"error: {r.unreadable}")
            continue
        assert r.result is not None
        for p in r.result.errors:
            out.append(p.format())
        for p in r.result.warnings:
            out.append(p.format_warning())
        for note in r.result.notes:
            out.append(f"{r.file}: note: {note}")
        n_err += len(r.result.errors)
        n_warn += len(r.result.warnings)
        status = "ok" if r.result.valid else f"invalid ({len(r.result.errors)} error(s))"
        out.append(f"{r.file}: {status}")
        for s in r.summaries:
            mem = s["memory"]
            b = mem["bytes"]
            out.append(
                f"  model {s['model']}"
                + (f" ({s['architecture']} architecture)" if s["architecture"] != s["model"] else "")
                + f": {s['parameters']:,} parameters; "
                f"{s['flops_per_token']:,} training FLOPs/token at seq_len {s['seq_len']}"
            )
            if s.get("lora"):
                share = 100 * s["trainable_parameters"] / max(1, s["parameters"])
                out.append(
                    f"  trainable: {s['trainable_parameters']:,} LoRA adapter parameters ({share:.3f}%); "
                    "the base is frozen"
                )
            out.append(
                f"  memory per process (micro-batch {mem['micro_batch_size']}, {mem['precision']}, "
                f"{mem['optimizer']}{', activation checkpointing' if mem['activation_checkpointing'] else ''}): "
                f"weights {_gib(b['weights'])}, grads {_gib(b['grads'])}, "
                f"optimizer state {_gib(b['optimizer_state'])}, activations {_gib(b['activations'])}, "
                f"total {_gib(b['total'])}"
            )
    valid = sum(1 for r in reports if r.result is not None and r.result.valid)
    invalid = sum(1 for r in reports if r.result is not None and not r.result.valid)
    unreadable = sum(1 for r in reports if r.unreadable)
    line = f"{len(reports)} config(s): {valid} valid, {invalid} invalid"
    if unreadable:
        line += f", {unreadable} unreadable"
    line += f"; {n_err} error(s), {n_warn} warning(s)"
    out.append(line)
    return "\n".join(out) + "\n", ("\n".join(err) + "\n") if err else ""


def render_json(reports: list[FileReport]) -> str:
    """One JSON document for pipelines: per file valid, errors, warnings, notes (and summaries)."""
    files = []
    for r in reports:
        if r.unreadable:
            files.append(
                {"file": r.file, "valid": False, "readable": False, "errors": [{"message": r.unreadable}]}
            )
            continue
        assert r.result is not None
        entry: dict[str, Any] = {
            "file": r.file,
            "valid": r.result.valid,
            "readable": True,
            "errors": [p.to_dict() for p in r.result.errors],
            "warnings": [p.to_dict() for p in r.result.warnings],
            "notes": list(r.result.notes),
        }
        if r.summaries:
            entry["summary"] = r.summaries
        files.append(entry)
    doc = {"valid": exit_code(reports) == 0, "exit_code": exit_code(reports), "files": files}
    return json.dumps(doc, indent=2) + "\n"
