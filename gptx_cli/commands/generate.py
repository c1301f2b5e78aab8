from __future__ import annotations

from gptx_cli.errors import NotImplementedYet


def generate_cmd() -> None:
    """Generate text from a checkpoint."""
    raise NotImplementedYet("gptx generate")
