"""`gptx convert checkpoint --info`: what a checkpoint holds, read from headers only (no tensor data)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from gptx_cli.checkpoint import hf_family_of, read_checkpoint_meta, read_json
from gptx_cli.convert.weights_convert import locate_source
from gptx_cli.weights import dtype_name, open_tensors


def checkpoint_info(path: str | Path) -> dict[str, Any]:
    """Format, family, step, parameter count, dtypes and shapes of a gptx or HF checkpoint."""
    p = Path(path)
    fmt = "weights"
    if p.is_dir():
        p, fmt = locate_source(p, None)
    info: dict[str, Any] = {"path": str(p), "format": fmt, "family": None, "step": None}
    if fmt == "gptx":
        meta = read_checkpoint_meta(p)
        info["family"] = meta["model"].get("name")
        info["step"] = meta.get("step")
        model = meta["model"]
        info["mup"] = model.get("mup_base_hidden_size") is not None
        info["tokenizer"] = meta.get("tokenizer")
    elif fmt == "hf":
        config = read_json(p / "config.json", "config.json")
        info["family"] = hf_family_of(config, p / "config.json")
        info["architectures"] = config.get("architectures")
    with open_tensors(p) as src:
        shapes = {k: src.shape(k) for k in src.keys()}
        dtypes = {k: dtype_name(src.dtype(k)) for k in shapes}
        info["files"] = [str(f.relative_to(p)) if p.is_dir() else f.name for f in _files(src)]
    numel = {k: _numel(s) for k, s in shapes.items()}
    info["num_tensors"] = len(shapes)
    info["num_parameters"] = sum(numel.values())
    by_dtype: Counter[str] = Counter()
    for k, n in numel.items():
        by_dtype[dtypes[k]] += n
    info["dtypes"] = dict(by_dtype.most_common())
    largest = sorted(shapes, key=lambda k: (-numel[k], k))[:5]
    info["largest"] = [(k, list(shapes[k]), dtypes[k]) for k in largest]
    # Shapes summary: how many tensors share each (shape, dtype) -- a layer stack shows up as one row.
    groups: Counter[tuple[tuple[int, ...], str]] = Counter((tuple(shapes[k]), dtypes[k]) for k in shapes)
    info["shapes"] = [
        (list(s), d, n) for (s, d), n in sorted(groups.items(), key=lambda x: (-_numel(x[0][0]), x[0]))
    ]
    return info


def _files(src: Any) -> list[Path]:
    files = sorted(set(src.file_of(k) for k in src.keys()))
    origin = Path(src.origin)
    return files if origin in files else [origin, *files]


def _numel(shape: Any) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def format_info(info: dict[str, Any]) -> str:
    lines = [
        f"path:        {info['path']}",
        f"format:      {info['format']}",
        f"family:      {info['family'] or 'unknown'}",
        f"step:        {info['step'] if info['step'] is not None else '-'}",
        f"parameters:  {info['num_parameters']:,} in {info['num_tensors']} tensors",
        "dtypes:      " + ", ".join(f"{d} ({n:,} params)" for d, n in info["dtypes"].items()),
        "files:       " + ", ".join(info["files"]),
    ]
    if info.get("mup"):
        lines.append("muP:         yes (exports to HF fold the multipliers into the weights)")
    lines.append("shapes:")
    for shape, dtype, count in info["shapes"]:
        lines.append(f"  {count:>5} x {str(shape):<24} {dtype}")
    lines.append("largest tensors:")
    for name, shape, dtype in info["largest"]:
        lines.append(f"  {name:<48} {str(shape):<24} {dtype}")
    return "\n".join(lines)
