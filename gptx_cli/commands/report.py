from __future__ import annotations

from pathlib import Path

import typer


def report_cmd(
    model_dir: Path = typer.Argument(..., help="A model_dir written by `gptx train` (holds metrics.jsonl)."),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Image path: .png, .pdf or .svg (default MODEL_DIR/report.png)."
    ),
) -> None:
    """Plot a training run's loss, learning rate and throughput over steps as a PNG.

    Example: gptx report model_dir/ -o loss.png
    """
    from gptx_cli.report import write_report

    path = write_report(model_dir, output)
    typer.echo(f"wrote {path}")
