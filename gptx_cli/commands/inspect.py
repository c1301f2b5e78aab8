"""`gptx inspect DATA_DIR`: show preprocessed samples (gptx_cli.data.inspect_data does the work)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from gptx_cli.errors import UsageError

FORMATS = ("text", "json")
# Plain text (not a terminal): a run of tokens not in the loss is written between these.
MASK_OPEN, MASK_CLOSE = "[[", "]]"


def inspect_cmd(
    data_dir: Annotated[
        Path, typer.Argument(help="A `gptx preprocess` output directory (or one of its .h5 files).")
    ],
    sample: Annotated[int, typer.Option("--sample", help="Index of the first sample to show.")] = 0,
    limit: Annotated[int, typer.Option("--limit", help="How many samples to show from --sample on.")] = 1,
    output_format: Annotated[
        str, typer.Option("--format", help="text or json (one object per sample).")
    ] = "text",
    tokenizer: Annotated[
        Optional[str],
        typer.Option("--tokenizer", help="Tokenizer (default: the one data_params.json records)."),
    ] = None,
) -> None:
    """Show preprocessed samples: decoded text, tokens outside the loss marked, document boundaries, and
    for VSL samples each document's positions and attention span.

    Example: gptx inspect train/ --sample 3 --limit 2
    """
    if output_format not in FORMATS:
        raise UsageError(f"--format must be one of {', '.join(FORMATS)} (got '{output_format}')")
    from gptx_cli.data.inspect_data import inspect_data

    found = inspect_data(data_dir, sample=sample, limit=limit, tokenizer=tokenizer)
    if output_format == "json":
        for view in found.samples:
            typer.echo(json.dumps(view.to_dict(), ensure_ascii=False))
        return
    styled = sys.stdout.isatty()
    typer.echo(found.header())
    for view in found.samples:
        _print_sample(view, styled)


def _print_sample(view: object, styled: bool) -> None:
    from gptx_cli.data.inspect_data import BOUNDARY, MASKED, SampleView

    assert isinstance(view, SampleView)
    pad = f", {view.padding} padding" if view.padding else ""
    head = (
        f"\n== sample {view.index}: {view.file} row {view.row} (msl {view.msl}{', VSL' if view.vsl else ''}): "
        f"{view.tokens} tokens, {view.loss_tokens} in the loss{pad} =="
    )
    legend = (
        "   dim: not in the loss (loss_mask 0)"
        if styled
        else f"   {MASK_OPEN}...{MASK_CLOSE}: not in the loss (loss_mask 0)"
    )
    if not styled:
        typer.echo(head + "\n" + legend)
        text = ""
        for piece, kind in view.pieces():
            if kind == BOUNDARY:
                text += ("" if not text or text.endswith("\n") else "\n") + piece + "\n"
            else:
                text += f"{MASK_OPEN}{piece}{MASK_CLOSE}" if kind == MASKED else piece
        typer.echo(text.rstrip("\n"))
        return
    from rich.console import Console
    from rich.text import Text

    console = Console(highlight=False, soft_wrap=True)
    console.print(Text(head, style="bold"))
    console.print(Text(legend, style="dim"))
    out = Text()
    for piece, kind in view.pieces():
        if kind == BOUNDARY:
            out.append(
                ("" if not out.plain or out.plain.endswith("\n") else "\n") + piece + "\n", style="bold cyan"
            )
        else:
            out.append(piece, style="dim" if kind == MASKED else "")
    out.rstrip()
    console.print(out)
