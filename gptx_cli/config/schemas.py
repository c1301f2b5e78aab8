"""Schemas and name registries: schemas/*.json (the single source of truth for config shape), the
names gptx accepts (optimizers, schedulers, data processors) and did-you-mean suggestions. Torch-free;
the leaf of `gptx_cli.config` (imports nothing from it).
"""

from __future__ import annotations

import difflib
import functools
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from gptx_cli.errors import ConfigError

KeyPath = tuple  # tuple[str | int, ...]: where a key sits in a config

# gptx_cli/schemas links to the repo's top-level schemas/ (a wheel holds a copy): one source of truth.
SCHEMA_DIR = Path(os.environ.get("GPTX_SCHEMAS") or Path(__file__).resolve().parents[1] / "schemas")
SCHEMA_BASE = "https://gptx.invalid/schemas/"
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


def canonical_optimizer_name(name: str) -> str | None:
    """`adamw` / `AdamW` -> `AdamW` (any case); None when not in schemas/optimizer.schema.json."""
    return {n.lower(): n for n in optimizer_names()}.get(str(name).lower())


def canonical_scheduler_name(name: str) -> str | None:
    """`Linear`/`linear`/`LinearLR` -> `LinearLR` (ModelZoo tries `name` and `name + "lr"`); None when
    unknown. The names are the schedulers in schemas/schedulers.schema.json."""
    # ModelZoo-only names convert too, so the trainer schema can say "not supported" about them.
    lookup = {n.lower(): n for n in (*scheduler_names(), *MODELZOO_ONLY_SCHEDULERS)}
    low = str(name).lower()
    return lookup.get(low) or lookup.get(low + "lr")
