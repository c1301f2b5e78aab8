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

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeGuard

from gptx_cli.config.build import build_run_spec
from gptx_cli.config.compat import callback_problems, legacy_no_effect_problems, no_effect_problems
from gptx_cli.config.flags import non_finite_problems
from gptx_cli.config.load import (
    ConfigSource,
    LocatedConfigError,
    apply_overrides,
    dataloader_sections,
    format_path,
    load_yaml,
    trainer_sources,
)
from gptx_cli.config.lora import group_problems, groups_of
from gptx_cli.config.schemas import KeyPath, _show, schema_problems
from gptx_cli.config.spec import ModelConfig, RunSpec
from gptx_cli.errors import ConfigError


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
    """ModelZoo's Lora callback (gptx_cli.config.lora): its lora_params, at the callback's line."""
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
        groups = groups_of(body["lora_params"])
        if not groups:
            out.append((path + ("lora_params",), "empty list", "error"))
        for index, d in groups:
            at = path + ("lora_params",) + ((index,) if index is not None else ())
            for key, message in group_problems(d):
                out.append(
                    (at + ((key,) if key and isinstance(d, dict) and key in d else ()), message, "error")
                )
    return out


def _model_rules(model: dict[str, Any], M: KeyPath) -> list[tuple[KeyPath, str, str]]:
    out: list[tuple[KeyPath, str, str]] = []
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
    # Only well-typed values: a null or a string here is already the schema's error at its key.
    types = {"name": str, "hidden_size": int, "num_heads": int, "rotary_dim": int}
    shape: dict[str, Any] = {
        k: v for k, t in types.items() if isinstance(v := model.get(k), t) and not isinstance(v, bool)
    }
    for key, message in ModelConfig.from_dict(shape).check():  # the model's own rules, one copy
        out.append((M + (key,), message, "error"))
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


def _data_rules(trainer: dict[str, Any], model: dict[str, Any]) -> list[tuple[KeyPath, str, str]]:
    out: list[tuple[KeyPath, str, str]] = []
    vocab = model.get("vocab_size", 50257)
    mpe = model.get("max_position_embeddings", 1024)
    mbs = _get(trainer, "trainer", "init", "backend", "micro_batch_size")
    accum = _get(trainer, "trainer", "init", "loop", "grad_accum_steps")
    for path, loader in dataloader_sections(trainer):
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
    for path, loader in dataloader_sections(trainer):
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
        for path, message in callback_problems(source.data):
            _add(result, source, path, message, "error")
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
