"""Ranks agree on the run, or none of them starts it.

Under torchrun each node reads its own YAML and flags, so a stale config on one node would make the
ranks slice different global batches, or stop at different steps and wait in a collective for ever.
Before anything is built, every rank all-gathers a fingerprint of what defines the run and compares:

- the resolved config after overrides (`spec.raw`, flattened to dotted keys);
- the command-line choices that change the run (TrainOptions);
- the data files: each data_dir's file names and sizes, and its data_params.json's sha256;
- the gptx and torch versions.

On a difference every rank raises the same one-line error, naming the first differing key, the two
ranks and both values.
"""

from __future__ import annotations

import dataclasses
import hashlib
from importlib.metadata import version
from pathlib import Path
from typing import Any

import torch

from gptx_cli import distributed
from gptx_cli.config.spec import RunSpec
from gptx_cli.data.params import params_file
from gptx_cli.errors import UsageError


def _flatten(value: Any, prefix: str, out: dict[str, str]) -> None:
    if isinstance(value, dict):
        for k in sorted(value, key=str):
            _flatten(value[k], f"{prefix}.{k}" if prefix else str(k), out)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _flatten(v, f"{prefix}[{i}]", out)
    else:
        out[prefix] = repr(value)


def _data_fingerprint(data_dir: str) -> str:
    d = Path(data_dir)
    if not d.is_dir():
        return "missing"
    files = sorted(
        (p.name, p.stat().st_size) for p in d.iterdir() if p.is_file() and not p.name.startswith(".")
    )
    params = params_file(d)
    digest = hashlib.sha256(params.read_bytes()).hexdigest()[:16] if params else "-"
    return f"{len(files)} files, {sum(size for _, size in files)} bytes, data_params {digest}, " + ",".join(
        f"{name}:{size}" for name, size in files
    )


def fingerprint(spec: RunSpec, options: Any) -> dict[str, str]:
    """What defines the run, as dotted keys -> values (strings)."""
    out: dict[str, str] = {}
    _flatten(spec.raw, "config", out)
    _flatten(dataclasses.asdict(options), "flags", out)
    for data in (spec.train_data, spec.val_data):
        for d in data.data_dir if data is not None else []:
            out[f"data {d}"] = _data_fingerprint(d)
    out["version.gptx"] = version("gptx")
    out["version.torch"] = torch.__version__
    return out


def check_ranks_agree(spec: RunSpec, options: Any, dist: distributed.Dist) -> None:
    """A collective: every rank calls it at the same point; every rank raises on a difference."""
    if not dist.enabled:
        return
    everyone = distributed.all_gather_object(fingerprint(spec, options), dist)
    first = everyone[0]
    for rank, other in enumerate(everyone[1:], start=1):
        if other == first:
            continue
        key = next(k for k in sorted(set(first) | set(other)) if first.get(k) != other.get(k))
        theirs, ours = first.get(key, "(not set)"), other.get(key, "(not set)")
        raise UsageError(
            f"the ranks disagree on {key}: rank 0 has {theirs}, rank {rank} has {ours}; "
            "every node must run the same config, flags, data and versions",
            hint="check the config and command line on each node",
        )
