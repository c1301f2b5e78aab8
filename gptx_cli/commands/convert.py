from __future__ import annotations

import typer

from gptx_cli.errors import NotImplementedYet

app = typer.Typer(help="Convert checkpoints and configs between Hugging Face and gptx / ModelZoo.", no_args_is_help=True)


@app.command("checkpoint")
def convert_checkpoint_cmd() -> None:
    """Convert a checkpoint."""
    raise NotImplementedYet("gptx convert checkpoint")


@app.command("config")
def convert_config_cmd() -> None:
    """Convert a config."""
    raise NotImplementedYet("gptx convert config")
