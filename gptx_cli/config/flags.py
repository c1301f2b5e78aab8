"""Command-line flags that override a config value get the YAML key's checks: the value is validated by
the same JSON Schema rule as the key (schemas/*.json), and a failure is a one-line UsageError naming the
flag ("--micro-batch-size -4: must be >= 1, got -4"). Every numeric flag, with or without a config key,
is also range-checked with the same wording by `gptx_cli.commands.options.check_number`. Torch-free.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from gptx_cli.config.schemas import schema_problems
from gptx_cli.errors import UsageError

KeyPath = tuple[str, ...]

# flag -> the trainer-layout key it overrides (under trainer.init)
TRAIN_FLAG_KEYS: dict[str, KeyPath] = {
    "--max-steps": ("loop", "max_steps"),
    "--micro-batch-size": ("backend", "micro_batch_size"),
    "--strategy": ("backend", "strategy"),
    "--target-device": ("backend", "backend_type"),
    "--eval-steps": ("loop", "eval_steps"),
}


def _nest(path: KeyPath, value: Any) -> dict[str, Any]:
    out: Any = value
    for key in reversed(path):
        out = {key: out}
    return out  # type: ignore[no-any-return]


def check_config_flag(flag: str, value: Any, key: KeyPath | None = None) -> None:
    """Validate `value` of `flag` against the schema rule of the config key it overrides."""
    if value is None:
        return
    path = ("trainer", "init", *(key or TRAIN_FLAG_KEYS[flag]))
    for where, message in schema_problems("trainer.schema.json", _nest(path, value)):
        if tuple(where) == path:
            raise UsageError(f"{flag} {value}: {message}")


def check_train_flags(values: dict[str, Any]) -> None:
    """`gptx train` / `continue-pretrain` flags; `values` maps flag -> the value given (None: not given)."""
    for flag, value in values.items():
        if value is None:
            continue
        if flag == "--strategy":
            check_config_flag(flag, str(value).lower())
        elif flag == "--target-device":
            check_config_flag(flag, str(value).upper())
        else:
            check_config_flag(flag, value)


# keys where an infinite value means something (truncated-normal bounds, "no clipping" limits)
_INF_OK = frozenset({"a", "b", "max_gradient_norm", "max_gradient_value", "max_loss_scale"})


def non_finite_problems(data: Any, path: KeyPath = ()) -> list[tuple[KeyPath, str, str]]:
    """(path, message, "error") for each NaN anywhere in a config, and each +-inf outside `_INF_OK`
    (a learning rate, weight decay, epsilon or std of inf trains nothing the user meant)."""
    out: list[tuple[KeyPath, str, str]] = []
    if isinstance(data, dict):
        for key, value in data.items():
            out += non_finite_problems(value, (*path, str(key)))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            out += non_finite_problems(value, (*path, str(i)))
    elif isinstance(data, float) and not math.isfinite(data):
        if math.isnan(data) or not path or path[-1] not in _INF_OK:
            out.append((path, f"must be a finite number, got {data}", "error"))
    return out


# ---------------------------------------------------------------------------------------------------
# Numeric flags: one check (the CLI applies it to every int / float flag: commands/options.py)

INT_LIMIT = 2**63 - 1  # seeds, counts and sizes end up in int64 (torch, numpy): larger ones overflow there


@dataclasses.dataclass(frozen=True)
class Range:
    """The values a numeric flag accepts: `low` (inclusive, or exclusive with `low_open`) to `high`."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False

    def problem(self, value: float) -> str | None:
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return f"must be {'>' if self.low_open else '>='} {_num(self.low)}"
        if self.high is not None and value > self.high:
            return f"must be <= {_num(self.high)}"
        return None


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


ANY = Range()
COUNT = Range(low=1)  # a number of things: 0 means nothing
POSITIVE = Range(low=0, low_open=True)
NON_NEGATIVE = Range(low=0)


def check_number(flag: str, value: Any, rule: Range = ANY) -> Any:
    """`value` of a numeric `flag`, refused in one line when NaN, infinite, past int64 or out of `rule`."""
    if value is None or isinstance(value, bool):
        return value
    value_s = _num(value) if isinstance(value, float) and math.isfinite(value) else str(value)
    if isinstance(value, float) and not math.isfinite(value):
        raise UsageError(f"{flag} {value}: must be a finite number, got {value}")
    if isinstance(value, int) and abs(value) > INT_LIMIT:
        raise UsageError(f"{flag} {value}: must be at most {INT_LIMIT} in size, got {value}")
    problem = rule.problem(value)
    if problem:
        raise UsageError(f"{flag} {value_s}: {problem}, got {value_s}")
    return value
