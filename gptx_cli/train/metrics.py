"""What a training run reports: metrics.jsonl, TensorBoard events, the console, and the final summary.

metrics.jsonl (in model_dir) holds one JSON object per line: {"step", "split": "train"|"eval", "loss",
"lr", "grad_norm", "tokens_per_s", "tflops", "mfu", "memory_gib", ...}; keys whose value is unknown are
left out. TensorBoard events go to model_dir/train and model_dir/eval (ModelZoo's layout). On a
terminal the console shows a rich progress bar; otherwise (CI, pipes, files) one plain line per log.
Only rank 0 creates a MetricsLogger.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gptx_cli.fsutil import write_text

METRICS_FILE = "metrics.jsonl"

# Dense bf16 peak TFLOP/s by GPU name substring (for MFU); unknown devices report no MFU.
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 70.0, "L4": 121.0}

_SPARK = "▁▂▃▄▅▆▇█"


def peak_tflops(device: str) -> float | None:
    if not device.startswith("cuda"):
        return None
    import torch

    name = torch.cuda.get_device_name(torch.device(device))
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def sparkline(values: list[float], width: int = 40) -> str:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return ""
    if len(finite) > width:  # average into `width` buckets
        n = len(finite)
        buckets = [finite[i * n // width : (i + 1) * n // width] for i in range(width)]
        finite = [sum(b) / len(b) for b in buckets]
    lo, hi = min(finite), max(finite)
    span = hi - lo or 1.0
    return "".join(
        _SPARK[min(len(_SPARK) - 1, int((v - lo) / span * (len(_SPARK) - 1) + 0.5))] for v in finite
    )


def truncate_metrics(model_dir: Path, after_step: int) -> None:
    """Drop lines past `after_step` (a resumed run repeats the steps after its checkpoint)."""
    path = model_dir / METRICS_FILE
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if int(json.loads(line).get("step", 0)) <= after_step:
                kept.append(line)
        except (ValueError, AttributeError):
            continue
    write_text(path, "".join(f"{line}\n" for line in kept))


def _fmt(value: Any) -> str:
    """One format for every console number: 5 significant digits, fixed notation with thousands
    separators (2.9676, 697.65, 3,824.1, 1,234,567), scientific only below 1e-3 (1.0000e-04)."""
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            return str(value)
        if value != 0.0 and abs(value) < 1e-3:
            return f"{value:.4e}"
        digits = len(str(int(abs(value)))) if abs(value) >= 1 else 1
        return f"{value:,.{max(0, 5 - digits)}f}"
    return str(value)


class ThroughputWindow:
    """tokens/s, TFLOP/s and MFU over the steps between two train logs. Time spent in eval and in
    checkpoints (inside `paused()`) is left out. The caller reads its device results before asking
    for the rates, so the window's end is when the device finished the work."""

    def __init__(
        self,
        *,
        tokens_per_step: int,
        flops_per_token: float | None,
        peak_tflops: float | None,
        world_size: int,
        start_step: int,
    ) -> None:
        self.tokens_per_step, self.flops_per_token = tokens_per_step, flops_per_token
        self.peak_tflops, self.world_size = peak_tflops, world_size
        self.last_step, self.started = start_step, time.perf_counter()

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.started += time.perf_counter() - t0

    def rates(self, step: int) -> dict[str, float | None]:
        """The window since the last call (or the start), ending now at `step`; starts the next one."""
        now = time.perf_counter()
        tokens_per_s = self.tokens_per_step * (step - self.last_step) / max(now - self.started, 1e-9)
        tflops = tokens_per_s * self.flops_per_token / 1e12 if self.flops_per_token else None
        peak = self.peak_tflops * self.world_size if self.peak_tflops else None
        self.last_step, self.started = step, now
        return {
            "tokens_per_s": tokens_per_s,
            "tflops": tflops,
            "mfu": tflops / peak if tflops and peak else None,
        }


class MetricsLogger:
    def __init__(
        self,
        model_dir: Path,
        *,
        total_steps: int,
        start_step: int,
        console: str = "auto",
        tensorboard: bool = True,
        tensorboard_dir: Path | None = None,
        sinks: list[Any] | None = None,
        window: ThroughputWindow | None = None,
    ) -> None:
        self.model_dir = model_dir
        self._tb_dir = tensorboard_dir or model_dir  # TensorBoardLogger's summary_dir (train/callbacks.py)
        self._sinks = list(sinks or [])  # loggers that get every record (WandbLogger)
        self.window = window
        model_dir.mkdir(parents=True, exist_ok=True)
        self._file = open(model_dir / METRICS_FILE, "a", buffering=1)  # noqa: SIM115 - closed in close()
        self._writers: dict[str, Any] = {}
        self._tensorboard = tensorboard
        self.total_steps, self.start_step = total_steps, start_step
        self.train_losses: list[float] = []
        self.eval_losses: list[tuple[int, float]] = []
        self.started = time.perf_counter()
        use_rich = console == "rich" or (console == "auto" and sys.stdout.isatty())
        self._progress: Any = None
        if use_rich:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self._progress = Progress(
                TextColumn("step {task.completed}/{task.total}"),
                BarColumn(),
                TextColumn("{task.fields[status]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
            )
            self._task = self._progress.add_task(
                "train", total=total_steps, completed=start_step, status="starting"
            )
            self._progress.start()

    def _tb(self, split: str) -> Any:
        if not self._tensorboard:
            return None
        if split not in self._writers:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard not installed: JSONL and console still work
                self._tensorboard = False
                return None
            self._writers[split] = SummaryWriter(log_dir=str(self._tb_dir / split))
        return self._writers[split]

    def log(self, record: dict[str, Any]) -> None:
        record = {k: v for k, v in record.items() if v is not None}
        self._file.write(json.dumps(record) + "\n")
        for sink in self._sinks:
            sink.log(record)
        split, step = record["split"], int(record["step"])
        if split == "train" and "loss" in record:
            self.train_losses.append(float(record["loss"]))
        if split == "eval" and "loss" in record:
            self.eval_losses.append((step, float(record["loss"])))
        writer = self._tb(split)
        if writer is not None:
            for key, value in record.items():
                if key not in ("step", "split") and isinstance(value, (int, float)):
                    writer.add_scalar(key, value, step)
        shown = ("loss", "lr", "grad_norm", "tokens_per_s", "tflops", "mfu", "lm_perplexity", "accuracy")
        text = "  ".join(f"{k} {_fmt(record[k])}" for k in shown if k in record)
        if self._progress is not None:
            if split == "train":
                compact = "  ".join(
                    part
                    for part in (
                        f"loss {record['loss']:.4f}" if "loss" in record else "",
                        f"lr {record['lr']:.2e}" if "lr" in record else "",
                        f"{record['tokens_per_s']:,.0f} tok/s" if "tokens_per_s" in record else "",
                    )
                    if part
                )
                self._progress.update(self._task, completed=step, status=compact)
            else:
                self._progress.console.print(f"eval step {step}: {text}")
        else:
            print(f"{split} step {step}/{self.total_steps}  {text}", flush=True)

    def log_train(self, step: int, record: dict[str, Any]) -> None:
        """A train record with the throughput window's tokens/s, TFLOP/s and MFU added."""
        rates = self.window.rates(step) if self.window is not None else {}
        self.log({"step": step, "split": "train", **record, **rates})

    def paused(self) -> contextlib.AbstractContextManager[None]:
        """Time inside is left out of the throughput window (eval, checkpoints)."""
        return self.window.paused() if self.window is not None else contextlib.nullcontext()

    def advance(self, step: int) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=step)

    def note(self, message: str) -> None:
        if self._progress is not None:
            self._progress.console.print(message)
        else:
            print(message, flush=True)

    def summary(self, rows: list[tuple[str, str]], losses: list[float] | None = None) -> None:
        """The end-of-run table and a sparkline of the train losses (every step's, else the logged ones)."""
        self.close_progress()
        line = sparkline(losses or self.train_losses)
        if sys.stdout.isatty():
            from rich.console import Console
            from rich.table import Table

            table = Table(title="training summary", show_header=False)
            for key, value in rows:
                table.add_row(key, value)
            if line:
                table.add_row("loss curve", line)
            Console().print(table)
        else:
            width = max(len(k) for k, _ in rows)
            print("training summary", flush=True)
            for key, value in rows:
                print(f"  {key:<{width}}  {value}")
            if line:
                print(f"  {'loss curve':<{width}}  {line}", flush=True)

    def close_progress(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def close(self) -> None:
        self.close_progress()
        if not self._file.closed:
            self._file.close()
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()
        for sink in self._sinks:
            sink.close()
        self._sinks.clear()
