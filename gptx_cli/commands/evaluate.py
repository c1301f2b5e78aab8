from __future__ import annotations

from gptx_cli.errors import NotImplementedYet


def eval_cmd() -> None:
    """Evaluate a checkpoint."""
    raise NotImplementedYet("gptx eval")
