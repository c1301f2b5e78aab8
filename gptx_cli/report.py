"""`gptx report MODEL_DIR`: a PNG of loss, learning rate and throughput over steps from metrics.jsonl."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from gptx_cli.errors import DataError, UsageError
from gptx_cli.fsutil import atomic_path, check_output

FORMATS = (".png", ".pdf", ".svg")  # what matplotlib writes without further packages


def read_metrics(model_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The records of `model_dir/metrics.jsonl`; a malformed line is an error naming file:line."""
    path = Path(model_dir) / "metrics.jsonl"
    if not path.is_file():
        raise UsageError(
            f"{path}: no metrics file (is {model_dir} a gptx model_dir written by `gptx train`?)"
        )
    records = []
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise DataError(
                    f"{path}:{lineno}: not UTF-8 text (byte 0x{raw[err.start]:02x}); is it a metrics file?"
                ) from None
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{path}:{lineno}: not a JSON object ({err.msg})") from None
            if not isinstance(rec, dict) or "step" not in rec:
                raise DataError(f"{path}:{lineno}: a metrics record needs a 'step' field")
            if not isinstance(rec["step"], int) or isinstance(rec["step"], bool):
                raise DataError(f"{path}:{lineno}: 'step' must be a whole number, got {rec['step']!r}")
            records.append(rec)
    if not records:
        raise DataError(f"{path}: no metrics recorded yet")
    return records


def _series(records: list[dict[str, Any]], split: str, key: str) -> tuple[list[int], list[float]]:
    xs, ys = [], []
    for rec in records:
        if rec.get("split", "train") == split and isinstance(rec.get(key), (int, float)):
            xs.append(int(rec["step"]))
            ys.append(float(rec[key]))
    return xs, ys


def write_report(model_dir: str | os.PathLike[str], output: str | os.PathLike[str] | None = None) -> Path:
    """Plot loss (train and eval), learning rate and tokens/s against step; returns the PNG path."""
    records = read_metrics(model_dir)
    out = Path(output) if output else Path(model_dir) / "report.png"
    check_output(out, what="--output" if output else "the report", kind="file", suffixes=FORMATS)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 1, figsize=(8, 9), sharex=True)
    for split, style in (("train", "-"), ("eval", "o-")):
        xs, ys = _series(records, split, "loss")
        if xs:
            axes[0].plot(xs, ys, style, label=f"{split} loss")
    axes[0].set_ylabel("loss")
    axes[0].legend()
    xs, ys = _series(records, "train", "lr")
    axes[1].plot(xs, ys)
    axes[1].set_ylabel("learning rate")
    xs, ys = _series(records, "train", "tokens_per_s")
    axes[2].plot(xs, ys)
    axes[2].set_ylabel("tokens/s")
    axes[2].set_xlabel("step")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.suptitle(f"gptx run: {Path(model_dir).resolve().name}")
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=100, format=out.suffix.lower().lstrip("."))
    plt.close(fig)
    return out
